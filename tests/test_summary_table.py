"""``archspec.summary`` and ``build --summary``: torchinfo's table with units a person reads."""

from __future__ import annotations

import pytest
import torchvision
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.torchinfo_table import mult_adds_line
from tests.conftest import ROOT

SPECS = ROOT / "specs"


def _footer(table: str) -> list[str]:
    """The totals under the table, without its rules of `=`."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Total params"))
    return [line for line in lines[start:] if not set(line) <= {"="}]


def test_densenet121_mult_adds_in_gigas_as_torchvision_counts_them() -> None:
    table = archspec.summary(SPECS / "densenet121.yaml", depth=0)
    assert "Units." not in table
    # torchvision's DenseNet121_Weights metadata: 2.834 G operations (multiply-adds) at 224×224
    ops = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.meta["_ops"]
    assert f"{ops:.2f}" == "2.83"
    assert _footer(table) == [
        "Total params: 7,978,856",  # torchvision.models.densenet121
        "Trainable params: 7,978,856",
        "Non-trainable params: 0",
        "Total mult-adds (G): 2.83",
        "Input size (MB): 0.60",  # 3 × 224 × 224 × 4 B
        "Forward/backward pass size (MB): 180.54",
        "Params size (MB): 31.92",  # 7,978,856 × 4 B
        "Estimated Total Size (MB): 213.06",
    ]


def test_build_summary_prints_the_same_units() -> None:
    result = CliRunner().invoke(main, ["build", str(SPECS / "tutorial.yaml"), "--summary", "--depth", "0"])
    assert result.exit_code == 0, result.output
    assert "Units." not in result.output
    footer = _footer(result.output)
    assert footer[:4] == [
        "Total params: 758,226",  # tutorial.yaml header
        "Trainable params: 758,226",
        "Non-trainable params: 0",
        "Total mult-adds (M): 129.40",
    ]
    assert footer[-1] == "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)"


@pytest.mark.parametrize(("count", "line"), [
    (2_834_161_824, "Total mult-adds (G): 2.83"),
    (7_728_000_000_000, "Total mult-adds (T): 7.73"),
    (129_401_600, "Total mult-adds (M): 129.40"),
    (999_999_999, "Total mult-adds (M): 1000.00"),
    (1_000_000_000, "Total mult-adds (G): 1.00"),
    (120_000, "Total mult-adds (M): 0.12"),  # below a mega: torchinfo also stays in M
    (0, "Total mult-adds (M): 0.00"),
])
def test_mult_adds_line(count: int, line: str) -> None:
    assert mult_adds_line(count) == line
