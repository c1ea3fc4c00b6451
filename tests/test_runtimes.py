"""Exported files in OpenCV DNN, OpenVINO (f32) and onnx2torch agree with PyTorch; ``--verify-with``
adds them to the verification, refuses a missing one before exporting, and fails on a disagreeing one."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.exporters import runtimes
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error
from tests.threads import one_torch_thread  # noqa: F401  (autouse)

pytestmark = pytest.mark.onnx

TUTORIAL = str(ROOT / "specs" / "tutorial.yaml")
# DenseNet-121 at 64×64 keeps every layer (the last dense block runs at 2×2) and the test quick.
SPECS = {
    "tutorial": (TUTORIAL, ()),
    "densenet121": (str(ROOT / "specs" / "densenet121.yaml"), ("input.height=64", "input.width=64")),
}
# onnx2torch lacks AveragePool 19 and other newer op versions; opset 17 is one every runtime here loads.
OPSET = 17
# fp32 in another runtime reorders sums; measured at most 2.3e-5 (docs/export.md).
BOUND = 1e-4


def _installed(name: str) -> bool:
    try:
        importlib.import_module(runtimes.RUNTIMES[name].package)
    except ImportError:
        return False
    return True


def _needs(name: str):
    return pytest.mark.skipif(not _installed(name), reason=f"{name} is not installed: pip install 'archspec[runtimes]'")


RUNTIME_PARAMS = [pytest.param(name, marks=_needs(name)) for name in runtimes.RUNTIMES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each spec exported once at opset 17 with seeded random weights, and the module it came from."""
    files = {}
    for name, (spec, overrides) in SPECS.items():
        folder = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        module = randomize_state(archspec.build(spec, overrides=overrides)).eval()
        torch.save(module.state_dict(), folder / "w.pt")
        archspec.export_onnx(spec, folder / f"{name}.onnx", overrides=overrides, weights=folder / "w.pt",
                             opset=OPSET, provider="cpu", batch_size=2)
        files[name] = (folder / f"{name}.onnx", module)
    return files


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("spec", list(SPECS))
def test_runtime_matches_pytorch(exported, spec, runtime):
    path, module = exported[spec]
    size = (1, 96, 96) if spec == "tutorial" else (3, 64, 64)
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x)
    actual = torch.from_numpy(runtimes.RUNTIMES[runtime].run(path, x.numpy()))
    error = relative_error(actual, expected)
    assert error <= BOUND, f"{spec} in {runtime}: relative error {error:.3g} > {BOUND:g}"


def _export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


@pytest.mark.skipif(not all(_installed(name) for name in runtimes.RUNTIMES),
                    reason="a runtime is not installed: pip install 'archspec[runtimes]'")
def test_verify_with_adds_each_runtime_to_lines_and_report(exported, tmp_path):
    weights = exported["tutorial"][0].parent / "w.pt"
    out, report = tmp_path / "t.onnx", tmp_path / "report.json"
    result = _export(TUTORIAL, "--onnx", str(out), "--weights", str(weights), "--opset", str(OPSET),
                     "--provider", "cpu", "--batch-size", "2", "--report", str(report),
                     "--verify-with", "opencv,openvino,onnx2torch")
    assert result.exit_code == 0, result.output
    for name in runtimes.RUNTIMES:
        assert f"verified in {name}: 3 cases, max abs error" in result.output, result.output
    checks = json.loads(report.read_text())["runtimes"]
    assert [check["runtime"] for check in checks] == list(runtimes.RUNTIMES), checks
    for check in checks:
        assert check["passed"] and len(check["cases"]) == 3, check
        assert max(case["max_abs_error"] for case in check["cases"]) < 1e-4, check


def test_missing_runtime_is_refused_before_exporting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    out = tmp_path / "t.onnx"
    result = _export(TUTORIAL, "--onnx", str(out), "--verify-with", "openvino")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert "openvino is not installed" in lines[0] and "pip install 'archspec[runtimes]'" in lines[0], lines
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_unknown_runtime_is_refused(tmp_path):
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "t.onnx"), "--verify-with", "tensorrt")
    assert result.exit_code == 2, result.output
    assert "unknown runtime 'tensorrt'" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_verify_with_and_no_verify_are_refused_together(tmp_path):
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "t.onnx"), "--verify-with", "opencv", "--no-verify")
    assert result.exit_code == 2, result.output
    assert "cannot go with --no-verify" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_disagreeing_runtime_fails_verification_and_leaves_nothing(exported, tmp_path, monkeypatch):
    def perturbed(path: Path, x: np.ndarray) -> np.ndarray:
        output = runtimes.RUNTIMES["onnx2torch"].run(path, x)
        return output + 0.01 * np.abs(output).max()

    monkeypatch.setitem(runtimes.RUNTIMES, "opencv", runtimes.Runtime("opencv", "numpy", perturbed))
    if not _installed("onnx2torch"):
        pytest.skip("onnx2torch is not installed: pip install 'archspec[runtimes]'")
    weights = exported["tutorial"][0].parent / "w.pt"
    out = tmp_path / "t.onnx"
    result = _export(TUTORIAL, "--onnx", str(out), "--weights", str(weights), "--opset", str(OPSET),
                     "--provider", "cpu", "--batch-size", "2", "--verify-with", "opencv")
    assert result.exit_code == 1, result.output
    assert "verification in opencv failed (rtol 0.001, atol 0.0001): batch 1" in result.output, result.output
    assert f"nothing written to {out}" in result.output, result.output
    assert list(tmp_path.iterdir()) == [], "nothing may be left at OUT, nor a temporary file"
