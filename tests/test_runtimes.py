"""Every reference spec's exported file, in onnxruntime, OpenCV DNN, OpenVINO (f32) and onnx2torch, agrees
with PyTorch; ``--verify-with`` adds them to the verification, refuses a missing one before exporting, and
fails on a disagreeing one."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.exporters import runtimes
from archspec.exporters.onnx import DEFAULT_OPSET
from archspec.exporters.verify import one_array
from archspec.network import DenseNet
from tests.conftest import ROOT, SPEC_FILES, SPEC_IDS
from tests.nontrivial import randomize_state, relative_error
from tests.threads import one_torch_thread  # noqa: F401  (autouse)

pytestmark = pytest.mark.onnx

TUTORIAL = str(ROOT / "specs" / "tutorial.yaml")
# onnx2torch lacks AveragePool 19 and other newer op versions; opset 17 is one every runtime here loads.
OPSET = 17
# The oldest opset archspec writes, the one every runtime loads, and what a plain export writes.
OPSETS = tuple(dict.fromkeys((13, OPSET, DEFAULT_OPSET)))
# fp32 in another runtime reorders sums; measured at most 2.3e-5 (docs/export.md).
BOUND = 1e-4

# Every reference spec (specs/**/*.yaml) runs small: an eighth of each dense block's layers (at least two,
# so that a layer still reads a concatenation; DenseNet-169, 201 and 264 stay different networks), and a
# smaller input. Images 64×64: the last dense block still sees 2×2 after the ÷32 of an ImageNet stem and
# three transitions (DenseNet-Blur's blurred stem pool included). Volumes 32×40×48: the depth at the 32
# the ÷32 needs to build, the three axes distinct. Signals (no reference spec yet) 256 samples. Sizes
# already smaller (CIFAR's 32×32) are kept.
LAYERS_DIVISOR, MIN_LAYERS = 8, 2
SMALL_INPUT = {"image": {"height": 64, "width": 64}, "volume": {"depth": 32, "height": 40, "width": 48},
               "signal": {"length": 256}}
# Kept as this file ran them before: the CLI tests below reuse the tutorial's weights, and DenseNet-121
# at 64×64 keeps every layer (the deepest network here, for rounding that accumulates).
AS_BEFORE = {"tutorial": (), "densenet121": ("input.height=64", "input.width=64")}


def _small(path: Path) -> tuple[str, ...]:
    spec = archspec.load_spec(path)
    overrides = [f"body[{index}].num_layers={layers}" for index, part in enumerate(spec.body)
                 if part.type == "dense_block"
                 and (layers := max(MIN_LAYERS, -(-part.num_layers // LAYERS_DIVISOR))) < part.num_layers]
    overrides += [f"input.{axis}={size}" for axis, size in SMALL_INPUT.get(spec.input.type, {}).items()
                  if getattr(spec.input, axis) > size]
    return tuple(overrides)


SPECS = {name: (str(path), AS_BEFORE[name] if name in AS_BEFORE else _small(path))
         for name, path in zip(SPEC_IDS, SPEC_FILES)}


def installed(name: str) -> bool:
    try:
        importlib.import_module(runtimes.RUNTIMES[name].package)
    except ImportError:
        return False
    return True


def needs(name: str):
    return pytest.mark.skipif(not installed(name), reason=f"{name} is not installed: pip install 'archspec[runtimes]'")


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return one_array(session.run(None, {session.get_inputs()[0].name: x}))  # a backbone's maps joined


RUNNERS: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "onnxruntime": run_onnxruntime,
    **{name: runtime.run for name, runtime in runtimes.RUNTIMES.items()},
}
MATRIX = [
    pytest.param(spec, opset, runtime, marks=() if runtime == "onnxruntime" else needs(runtime))
    for spec in SPECS
    for opset in OPSETS
    for runtime in RUNNERS
    if runtime != "onnx2torch" or opset == OPSET
]


@dataclass(frozen=True)
class Exported:
    """A spec's file at one opset, the weights it was exported with, and PyTorch's answer on ``x``."""

    path: Path
    weights: Path
    x: torch.Tensor
    expected: torch.Tensor


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str, int], Exported]:
    """Each (spec, opset) exported once, when a test first asks, with seeded random weights."""
    modules: dict[str, tuple[Path, torch.Tensor, torch.Tensor]] = {}
    files: dict[tuple[str, int], Exported] = {}

    def get(name: str, opset: int) -> Exported:
        spec, overrides = SPECS[name]
        if name not in modules:
            folder = tmp_path_factory.mktemp(name.replace("/", "-"))
            torch.manual_seed(0)
            module = randomize_state(archspec.build(spec, overrides=overrides)).eval()
            torch.save(module.state_dict(), folder / "w.pt")
            loaded = archspec.load_spec(spec, overrides)
            shape = archspec.static_pass(loaded).input_shape
            x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                out = module(x)
            # A backbone's named maps joined as every runner joins the file's outputs.
            expected = torch.from_numpy(one_array([t.numpy() for t in out.values()])) if isinstance(out, dict) else out
            modules[name] = (folder / "w.pt", x, expected)
        if (name, opset) not in files:
            weights, x, expected = modules[name]
            path = weights.parent / f"opset{opset}.onnx"
            report = archspec.export_onnx(spec, path, overrides=overrides, weights=weights, opset=opset,
                                          provider="cpu", batch_size=2)
            assert (report.opset, report.written) == (opset, True), report
            files[name, opset] = Exported(path, weights, x, expected)
        return files[name, opset]

    return get


@pytest.mark.parametrize(("spec", "opset", "runtime"), MATRIX)
def test_runtime_matches_pytorch(exported, spec, opset, runtime):
    file = exported(spec, opset)
    actual = torch.from_numpy(np.asarray(RUNNERS[runtime](file.path, file.x.numpy())))
    error = relative_error(actual, file.expected)
    assert error <= BOUND, f"{spec} at opset {opset} in {runtime}: relative error {error:.3g} > {BOUND:g}"


def _export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


@pytest.mark.skipif(not all(installed(name) for name in runtimes.RUNTIMES),
                    reason="a runtime is not installed: pip install 'archspec[runtimes]'")
def test_verify_with_adds_each_runtime_to_lines_and_report(exported, tmp_path):
    weights = exported("tutorial", OPSET).weights
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


@needs("onnx2torch")
def test_pytorchs_outputs_are_computed_once_for_every_runtime(exported, tmp_path):
    # The tutorial's three cases come in two input sizes: one forward pass per size serves
    # onnxruntime and each further runtime (they once ran again per runtime). Random norm state
    # and biases, so that the runtimes' agreement is not that of identities.
    weights = exported("tutorial", OPSET).weights
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, _: calls.append(tuple(args[0].shape[1:])) if isinstance(module, DenseNet) else None)
    try:
        report = archspec.export_onnx(TUTORIAL, tmp_path / "t.onnx", weights=weights, provider="cpu", batch_size=2,
                                      opset=OPSET, verify_with=("onnx2torch",))
    finally:
        hook.remove()
    assert report.runtimes[0].passed and len(report.runtimes[0].cases) == 3, report.runtimes
    assert report.random_state is None, "the loaded weights hold no initial values"
    assert calls == [(1, 96, 96), (1, 72, 60)]


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
    if not installed("onnx2torch"):
        pytest.skip("onnx2torch is not installed: pip install 'archspec[runtimes]'")
    weights = exported("tutorial", OPSET).weights
    out = tmp_path / "t.onnx"
    result = _export(TUTORIAL, "--onnx", str(out), "--weights", str(weights), "--opset", str(OPSET),
                     "--provider", "cpu", "--batch-size", "2", "--verify-with", "opencv")
    assert result.exit_code == 1, result.output
    assert "verification in opencv failed (rtol 0.001, atol 0.0001): batch 1" in result.output, result.output
    assert f"nothing written to {out}" in result.output, result.output
    assert list(tmp_path.iterdir()) == [], "nothing may be left at OUT, nor a temporary file"


@needs("openvino")
def test_backbone_has_one_named_output_per_map_verified_in_onnxruntime_and_openvino(tmp_path: Path) -> None:
    # DenseNet-121 as a backbone (two layers per block, 64×64): timm's five points as five named maps.
    outputs = ("outputs=[{name: stem, at: stem.activation}, {name: c2, at: 'body[0]'}, {name: c3, at: 'body[2]'},"
               " {name: c4, at: 'body[4]'}, {name: c5, at: head.activation}]")
    overrides = (outputs, "input.height=64", "input.width=64", *(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6)))
    spec = archspec.load_spec(ROOT / "specs" / "densenet121.yaml", overrides)
    path = tmp_path / "backbone.onnx"
    others = ("openvino", "onnx2torch") if installed("onnx2torch") else ("openvino",)
    report = archspec.export_onnx(spec, path, provider="cpu", opset=OPSET, verify_with=others)
    assert report.written and report.verification.passed, report.verification
    assert [check.runtime for check in report.runtimes][0] == "openvino"
    assert all(check.passed and len(check.cases) == len(report.verification.cases) for check in report.runtimes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["stem", "c2", "c3", "c4", "c5"]
    # Batch and spatial sizes are dynamic in the input and in every map.
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for output, channels in zip(session.get_outputs(), (64, 128, 128, 128, 128)):  # half of 128, + 2 × 32, per block
        assert output.shape[0] == "batch" and output.shape[1] == channels, output.shape
        assert all(isinstance(dim, str) for dim in output.shape[2:]), output.shape
    # At another batch and size than the verification's: OpenVINO's maps are onnxruntime's, by name.
    x = torch.randn((3, 3, 96, 64), generator=torch.Generator().manual_seed(5))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert [g.shape for g in got] == [(3, 64, 48, 32), (3, 128, 24, 16), (3, 128, 12, 8), (3, 128, 6, 4),
                                      (3, 128, 3, 2)]
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(x.numpy())
    names = ["stem", "c2", "c3", "c4", "c5"]
    assert all(name in output.get_names() for name, output in zip(names, compiled.outputs)), compiled.outputs
    for name, ours in zip(names, got):
        theirs = np.asarray(results[compiled.output(name)])
        assert relative_error(torch.from_numpy(theirs), torch.from_numpy(ours)) < BOUND, name
