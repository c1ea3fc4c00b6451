"""Resource guard: oversized specs are refused with the numbers and the overriding flag,
before anything is allocated, in the API and in ``archspec build``."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.format.guard import check_resources, machine_memory
from tests.conftest import ROOT

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
# growth_rate 100000 in the tutorial: 5,725,514,457,362 parameters (static pass), 20.83 TiB.
HUGE = ("defaults.growth_rate=100000",)


def _tabular_with_params(params: int) -> archspec.Spec:
    """A tabular spec with exactly ``params`` parameters: a 1-wide stem makes the count the
    number of input features plus a constant (the static pass, nothing allocated)."""
    def spec(features: int) -> archspec.Spec:
        return archspec.load_spec({
            "archspec": 1, "name": "boundary", "input": {"type": "tabular", "features": features},
            "stem": {"type": "mlp_stem", "hidden": [1]},
            "body": [{"type": "dense_block", "layer": "linear", "num_layers": 1, "growth_rate": 1, "bn_size": None}],
            "head": {"type": "regressor"},
        })

    rest = archspec.static_pass(spec(1)).params - 1
    return spec(params - rest)


def test_default_limit_takes_two_billion_parameters_and_refuses_one_more() -> None:
    at_limit = _tabular_with_params(2_000_000_000)
    assert archspec.static_pass(at_limit).params == 2_000_000_000
    check_resources(at_limit, max_memory=2**60)  # the default limit, inclusive
    with pytest.raises(archspec.SpecError) as error:
        check_resources(_tabular_with_params(2_000_000_001), max_memory=2**60)
    assert error.value.message == ("2,000,000,001 parameters exceed the limit of 2,000,000,000; "
                                   "raise the limit with --max-params 2000000001")


def test_machine_memory_is_physical_memory() -> None:
    # An independent reading: the kernel's MemTotal (physical memory less what it reserved
    # at boot, a few percent at most).
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo on this system")
    total = next(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                 if line.startswith("MemTotal:"))
    assert 0 <= machine_memory() - total <= 0.05 * total


def test_too_many_parameters_refused_with_numbers_and_flag() -> None:
    spec = archspec.load_spec(TUTORIAL, HUGE)
    with pytest.raises(archspec.SpecError) as error:
        check_resources(spec, max_memory=2**60)
    assert [str(p) for p in error.value.problems] == [
        "5,725,514,457,362 parameters exceed the limit of 2,000,000,000; "
        "raise the limit with --max-params 5725514457362"
    ]


def test_forward_memory_over_limit_refused_with_numbers_and_flag() -> None:
    spec = archspec.load_spec(TUTORIAL)
    # 1000 × 6,005,792 bytes of stored activations (test_memory_estimate) = 5.59 GiB.
    with pytest.raises(archspec.SpecError) as error:
        check_resources(spec, batch_size=1000, max_memory=1024**3)
    assert str(error.value) == (
        "parameters (2.89 MiB) and the forward pass at batch 1000 (5.59 GiB) need 5.60 GiB, "
        "more than the limit (1.00 GiB); raise the limit with --max-memory SIZE"
    )
    check_resources(spec, batch_size=1000, max_memory=6 * 1024**3)  # raised: accepted


def test_limits_are_inclusive() -> None:
    spec = archspec.load_spec(TUTORIAL)
    check_resources(spec, max_params=758_226)
    with pytest.raises(archspec.SpecError):
        check_resources(spec, max_params=758_225)


def test_build_refuses_before_allocating() -> None:
    # Allocating 20 TiB of weights would fail or hang; the guard answers first.
    with pytest.raises(archspec.SpecError) as error:
        archspec.build(TUTORIAL, overrides=HUGE)
    assert len(error.value.problems) == 2
    assert error.value.message.startswith("5,725,514,457,362 parameters exceed the limit")
    assert "more than this machine's memory" in str(error.value.problems[1])


def test_build_api_takes_the_limits() -> None:
    with pytest.raises(archspec.SpecError):
        archspec.build(TUTORIAL, max_params=758_225)
    model = archspec.build(TUTORIAL, max_params=758_226, batch_size=8, max_memory=64 * 1024**2)
    assert sum(p.numel() for p in model.parameters()) == 758_226


def test_cli_build_refuses_with_exit_2_and_one_line() -> None:
    result = CliRunner().invoke(main, ["build", str(TUTORIAL), "--max-params", "758225"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: 758,226 parameters exceed the limit of 758,225; raise the limit with --max-params 758226"
    ]
    result = CliRunner().invoke(main, ["build", str(TUTORIAL), "--batch-size", "1000", "--max-memory", "1GiB"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: parameters (2.89 MiB) and the forward pass at batch 1000 (5.59 GiB) need 5.60 GiB, "
        "more than the limit (1.00 GiB); raise the limit with --max-memory SIZE"
    ]


def test_cli_export_refuses_over_the_limit_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "tutorial.onnx"
    result = CliRunner().invoke(main, ["export", str(TUTORIAL), "--onnx", str(out), "--max-params", "758225"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: 758,226 parameters exceed the limit of 758,225; raise the limit with --max-params 758226"
    ]
    assert list(tmp_path.iterdir()) == []


def test_cli_build_accepts_raised_limit() -> None:
    result = CliRunner().invoke(main, ["build", str(TUTORIAL), "--max-params", "758226", "--max-memory", "1GiB"])
    assert result.exit_code == 0, result.output
    assert result.output == "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)\n"


def test_cli_bad_memory_size() -> None:
    result = CliRunner().invoke(main, ["build", str(TUTORIAL), "--max-memory", "lots"])
    assert result.exit_code == 2
    assert result.output == "error: --max-memory: expected a memory size such as 4GiB or 512MiB, got 'lots'\n"


def test_guard_never_imports_torch() -> None:
    code = (
        "import sys; from archspec.format.load import load_spec; "
        "from archspec.format.guard import check_resources; "
        f"check_resources(load_spec({str(TUTORIAL)!r})); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"
