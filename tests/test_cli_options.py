"""CLI options with no test of their own: export's --static, --rtol, --max-memory, --set and
--report into a missing folder, .safetensors weights, validate over good and bad files,
--version, and build --summary --weights. Exit codes and exact lines."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from safetensors.torch import save_file

import archspec
from archspec.cli import main
from tests.conftest import ROOT, run_cli
from tests.nontrivial import randomize_state, relative_error

SPECS = ROOT / "specs"
MLP = str(SPECS / "mlp_tabular.yaml")
TUTORIAL = str(SPECS / "tutorial.yaml")
NUMBER = r"[0-9.e+-]+"
# mlp_tabular.yaml header: 2,880,449 parameters, of which Linear(608, 1) is the regressor's 609.
MLP3_PARAMS = 2_880_449 - 609 + (608 * 3 + 3)  # 2,881,667 with head.out_features=3


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_version_is_the_package_version() -> None:
    result = run_cli("--version")
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"archspec, version {declared[1]}\n", "")
    assert declared[1] == version("archspec") == archspec.__version__


def test_validate_good_and_bad_files(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text((SPECS / "tutorial.yaml").read_text().replace("growth_rate: 32", "growth_rat: 32"))
    missing = tmp_path / "missing.yaml"
    result = _invoke("validate", TUTORIAL, str(typo), MLP, str(missing))
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"{TUTORIAL}: ok (tutorial, 758,226 parameters, output (10))",  # tutorial.yaml header
        f"{MLP}: ok (mlp_tabular, 2,880,449 parameters, output (1))",  # mlp_tabular.yaml header
    ]
    errors = result.stderr.splitlines()
    assert len(errors) == 2, errors
    line = 1 + (SPECS / "tutorial.yaml").read_text().splitlines().index("  growth_rate: 32")
    assert errors[0] == f"{typo}:{line}:3: defaults.growth_rat: unknown field 'growth_rat'; did you mean 'growth_rate'?"
    assert errors[1] == f"{missing}: cannot read spec: No such file or directory"


def test_export_static_rtol_set_and_max_memory(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(randomize_state(archspec.build(MLP, overrides=("head.out_features=3",)), seed=4).state_dict(),
               weights)
    out = tmp_path / "mlp3.onnx"
    result = _invoke("export", MLP, "--onnx", str(out), "--static", "--batch-size", "3", "--rtol", "0.01",
                     "--set", "head.out_features=3", "--max-memory", "1GiB", "--weights", str(weights),
                     "--provider", "cpu", "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    lines = result.output.splitlines()
    assert lines[0] == (f"wrote {out}: {out.stat().st_size / 1e6:.1f} MB, 2,881,667 parameters, "
                        f"opset {report['opset']}, {report['exporter']} exporter")
    assert lines[1] == "input (3, 330) -> prediction"  # --static: the batch is fixed at --batch-size
    assert lines[2] == "verified on CPUExecutionProvider (CPU provider requested), rtol 0.01, atol 0.0001:"
    assert re.fullmatch(rf"  batch 3 \(3, 330\): max abs error {NUMBER}, max rel error {NUMBER} \(ok\)", lines[3])
    assert report["params"] == MLP3_PARAMS
    assert report["verification"]["tolerance"] == {"rtol": 0.01, "atol": 0.0001}
    session = _session(out)
    assert session.get_inputs()[0].shape == [3, 330]
    assert session.run(None, {"input": np.zeros((3, 330), np.float32)})[0].shape == (3, 3)
    with pytest.raises(InvalidArgument):  # a static file takes its batch only
        session.run(None, {"input": np.zeros((4, 330), np.float32)})
    assert _listing(tmp_path) == ["mlp3.onnx", "r.json", "w.pt"]


def test_export_max_memory_too_small_refuses_before_work(tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    result = _invoke("export", TUTORIAL, "--onnx", str(out), "--max-memory", "1MiB", "--provider", "cpu")
    assert result.exit_code == 2
    # 758,226 fp32 parameters (tutorial.yaml header) = 2.89 MiB, already over the 1 MiB limit
    assert re.fullmatch(r"error: parameters \(2\.89 MiB\) and the forward pass at batch 4 \([0-9.]+ MiB\) need "
                        r"[0-9.]+ MiB, more than the limit \(1\.00 MiB\); raise the limit with --max-memory SIZE\n",
                        result.output), result.output
    assert _listing(tmp_path) == []


def test_export_report_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    # Refused like --onnx into a missing folder: a mistyped folder name is not created silently,
    # and the refusal comes before the export, so nothing is written anywhere.
    report = tmp_path / "reports" / "r.json"
    out = tmp_path / "x.onnx"
    result = _invoke("export", MLP, "--onnx", str(out), "--report", str(report), "--provider", "cpu")
    assert (result.exit_code, result.output) == (2, f"{report}: report directory does not exist\n")
    assert _listing(tmp_path) == []


@pytest.mark.onnx
def test_export_safetensors_weights(tmp_path: Path) -> None:
    # Seeded: the single regression output is a sum that nearly cancels for some weights, where
    # fp32 reordering reaches 3e-5 of it; with these weights it is 3e-7.
    torch.manual_seed(0)
    source = randomize_state(archspec.build(MLP), seed=6).eval()
    weights = tmp_path / "mlp.safetensors"
    save_file(source.state_dict(), str(weights))
    out = tmp_path / "mlp.onnx"
    result = _invoke("export", MLP, "--onnx", str(out), "--weights", str(weights), "--provider", "cpu",
                     "--batch-size", "2", "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["weights"], report["verification"]["passed"]) == (str(weights), True)
    x = torch.randn(5, 330, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = source(x)
    actual = torch.from_numpy(_session(out).run(None, {"input": x.numpy()})[0])
    assert actual.shape == (5, 1)
    error = relative_error(actual, expected)
    assert error < 1e-5, f"the file differs from the network holding the .safetensors weights by {error:.3g}"


def test_export_safetensors_for_another_head_exit_2(tmp_path: Path) -> None:
    weights = tmp_path / "three.safetensors"
    save_file(archspec.build(MLP, overrides=("head.out_features=3",)).state_dict(), str(weights))
    result = _invoke("export", MLP, "--onnx", str(tmp_path / "x.onnx"), "--weights", str(weights),
                     "--provider", "cpu")
    assert (result.exit_code, result.output) == (2, (
        f"{weights}: 2 shape mismatches: regressor.bias (file (3), model (1)), "
        "regressor.weight (file (3, 608), model (1, 608)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)\n"))
    assert _listing(tmp_path) == ["three.safetensors"]


def _footer(text: str) -> list[str]:
    """The totals under torchinfo's table and the result line, without the rules of `=`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Total params"))
    return [line for line in lines[start:] if not set(line) <= {"="}]


def test_build_summary_with_weights(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(randomize_state(archspec.build(TUTORIAL), seed=7).state_dict(), weights)
    result = _invoke("build", TUTORIAL, "--summary", "--depth", "0", "--weights", str(weights))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"loaded {weights}: 147 tensors, 758,226 parameters"
    assert result.stdout.splitlines()[2].startswith("Layer (type (var_name))")
    assert _footer(result.stdout) == [
        "Total params: 758,226",  # tutorial.yaml header
        "Trainable params: 758,226",
        "Non-trainable params: 0",
        "Total mult-adds (M): 129.40",
        "Input size (MB): 0.04",  # 96 × 96 × 4 B
        "Forward/backward pass size (MB): 7.94",
        "Params size (MB): 3.03",  # 758,226 × 4 B
        "Estimated Total Size (MB): 11.01",
        "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)",
    ]


def test_build_summary_with_mismatched_weights_prints_no_table(tmp_path: Path) -> None:
    weights = tmp_path / "five.pt"
    torch.save(archspec.build(TUTORIAL, overrides=("head.num_classes=5",)).state_dict(), weights)
    result = _invoke("build", TUTORIAL, "--summary", "--weights", str(weights))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"{weights}: 2 shape mismatches: classifier.weight (file (5, 248), model (10, 248)), "
                             "classifier.bias (file (5), model (10)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)\n")


@pytest.mark.parametrize("command", [("validate",), ("build",), ("diagram", "-o", "{out}/d.svg"),
                                     ("fit", "--memory", "1GiB"), ("export", "--onnx", "{out}/c.onnx")])
def test_allow_extends_outside_reaches_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside" / "base.yaml").write_text(
        (ROOT / "specs" / "tutorial.yaml").read_text() + "\n", encoding="utf-8")
    child = tmp_path / "inside" / "child.yaml"
    child.write_text("extends: ../outside/base.yaml\nname: child\n", encoding="utf-8")
    name, *rest = (part.format(out=tmp_path) for part in command)
    refused = _invoke(name, str(child), *rest)
    assert refused.exit_code == 2 and "pass --allow-extends-outside to read it" in refused.output, refused.output
    allowed = _invoke(name, "--allow-extends-outside", str(child), *rest)
    assert allowed.exit_code == 0, allowed.output
    assert "child" in allowed.output or "wrote" in allowed.output
