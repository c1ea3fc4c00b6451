"""Deployment formats: each file run in its own runtime against PyTorch, refusals in one line, atomic writes.

Small inputs (``--set input.height=32``) keep every conversion to seconds; one reference spec of
each kind in every format that runs here is the ``slow`` test at the end.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import archspec
from archspec import SpecError, VerificationError
from archspec.cli import main
from archspec.exporters.formats import torch_export
from archspec.exporters.formats.registry import FORMATS
from archspec.exporters.formats.verify import Case, check, compare, flatten

TINY = ("input.height=32", "input.width=32")  # tutorial: 758,226 parameters at any size (torchvision-style count)
TUTORIAL_PARAMS = 758_226
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_torch_export_is_proven_on_two_batches_two_sizes_and_random_state(tmp_path: Path) -> None:
    out = tmp_path / "t.pt2"
    report = archspec.export("specs/tutorial.yaml", out, format="torch-export", overrides=TINY)
    assert report.written and out.is_file() and report.params == TUTORIAL_PARAMS
    assert report.input_shape == ("batch", 1, "height", "width"), "batch and spatial sizes stay free"
    assert [(c.name, c.input_shape) for c in report.verification.cases] == [
        ("batch 1", (1, 1, 32, 32)), ("batch 4", (4, 1, 32, 32)), ("batch 4 at 40×36", (4, 1, 40, 36))]
    assert report.verification.max_relative_error < 1e-5
    # Fresh weights: 21 norms hold (0, 1) statistics; the copy with random ones was converted and run too.
    assert report.initial_values == "21 of 21 norms and 1 of 21 biases"
    assert report.random_state is not None and report.random_state.passed
    assert [c.largest_output for c in report.random_state.cases] != [c.largest_output for c in report.verification.cases]
    assert json.loads(report.to_json())["passed"] is True


def test_a_file_that_differs_from_the_module_is_refused_and_nothing_is_written(tmp_path: Path, monkeypatch) -> None:
    original = torch_export.write

    def wrong(module, example, out, **options):  # the file of another network: drop the last norm's shift
        changed = __import__("copy").deepcopy(module)
        with torch.no_grad():
            changed.features.norm5.bias.add_(0.5)
        return original(changed, example, out, **options)

    monkeypatch.setattr(torch_export, "write", wrong)
    with pytest.raises(VerificationError, match=r"verification in torch.export.load .* failed \(max error ≤ 0.0001"):
        archspec.export("specs/tutorial.yaml", tmp_path / "t.pt2", format="torch-export", overrides=TINY,
                        report=tmp_path / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"], "no file, no temporary left"
    failed = json.loads((tmp_path / "r.json").read_text())
    assert failed["written"] is False and failed["verification"]["passed"] is False


def test_dict_outputs_are_compared_each_against_its_own_largest_value(tmp_path: Path) -> None:
    class TwoMaps(torch.nn.Module):
        def forward(self, x):
            return {"logits": x.mean(dim=(2, 3)) * 3, "map": x[:, :1] * 1e-3}

    module = TwoMaps().eval()
    path = tmp_path / "two.pt2"
    torch_export.write(module, torch.randn(2, 2, 4, 4), path, precision="fp32", dynamic={0: "batch"}, max_batch=2)
    cases = (Case("batch 1", (1, 2, 4, 4)), Case("batch 3", (3, 2, 4, 4)))
    result = check(FORMATS["torch-export"], torch_export.runner(path, precision="fp32"), module, cases,
                   precision="fp32", version="")
    assert result.passed and [n for n, _ in flatten(module(torch.zeros(1, 2, 4, 4)))] == ["logits", "map"]
    # The small map judged on its own scale: an error of 1e-5 there is 1% of it, though 1e-5 of the logits.
    expected = flatten(module(torch.ones(1, 2, 4, 4)))
    off = [expected[0][1], expected[1][1] + 1e-5]
    case = compare(cases[0], off, expected, 1e-4)
    assert not case.passed and case.max_relative_error == pytest.approx(1e-2, rel=1e-3)
    assert not compare(cases[0], off[:1], expected, 1e-4).passed, "a missing output fails"


@needs_openvino
@pytest.mark.parametrize("spec, overrides, spatial_cases", [
    ("specs/tutorial.yaml", TINY, 3),
    ("specs/mlp_tabular.yaml", (), 2),  # feature vectors: no spatial size to vary
    ("specs/monai/densenet121_3d.yaml", ("input.depth=32", "input.height=32", "input.width=32",
                                         "body[2].num_layers=2", "body[4].num_layers=2", "body[6].num_layers=2"), 3),
])
def test_openvino_ir_in_openvino(tmp_path: Path, spec: str, overrides: tuple[str, ...], spatial_cases: int) -> None:
    out = tmp_path / "m.xml"
    result = _cli("export", spec, "--format", "openvino", "-o", str(out), *(f"--set={o}" for o in overrides),
                  "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "r.json"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["verification"]["cases"]) == spatial_cases
    assert report["random_state"]["passed"] and max(
        c["max_relative_error"] for c in report["random_state"]["cases"]) < 1e-4
    assert report["file_bytes"] == (tmp_path / "m.xml").stat().st_size + (tmp_path / "m.bin").stat().st_size


def test_3d_in_litert_is_refused_at_the_input_before_converting(tmp_path: Path) -> None:
    result = _cli("export", "specs/monai/densenet121_3d.yaml", "--format", "litert", "-o", str(tmp_path / "m.tflite"))
    assert result.exit_code == 2
    assert result.output.strip() == ("specs/monai/densenet121_3d.yaml:9:8: input: litert cannot express 3D input "
                                     "(volumes): litert-torch 0.10's converter aborts the whole process on a 3D "
                                     "network (measured); choose another format")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_converter_is_one_line_naming_its_extra(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = _cli("export", "specs/tutorial.yaml", "--format", "openvino", "-o", "never.xml")
    assert result.exit_code == 2
    assert result.output == ("error: --format: openvino needs openvino, which is not installed: "
                             "pip install 'archspec[openvino]'\n")


@pytest.mark.parametrize("args, line", [
    (("--format", "torch-export", "--precision", "fp16", "-o", "x.pt2"),
     "error: --precision: torch-export files are written in fp32, not fp16"),
    (("--format", "openvino", "--onnx", "x.onnx"),
     "error: --onnx: --onnx writes ONNX; for --format openvino name the file with -o OUT"),
    (("--format", "openvino", "--opset", "13", "-o", "x.xml"),
     "error: --opset: applies to ONNX files only, not --format openvino"),
    (("--format", "openvino", "-o", "x.ir"),
     "x.ir: a openvino output ends in .xml: its runtime finds .bin beside it by name"),
    ((), "error: -o: no output: -o OUT (or --onnx OUT)"),
])
def test_refusals_are_one_line_and_exit_2(args: tuple[str, ...], line: str) -> None:
    result = _cli("export", "specs/tutorial.yaml", *args)
    assert (result.exit_code, result.output) == (2, line + "\n")


def test_a_runtime_that_cannot_run_here_writes_only_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    if FORMATS["coreml"].implementation().not_runnable() is None:
        pytest.skip("Core ML runs here (macOS)")
    out = tmp_path / "m.mlpackage.zip"
    refused = _cli("export", "specs/tutorial.yaml", "--format", "coreml", "-o", str(out), *(f"--set={o}" for o in TINY))
    assert refused.exit_code == 2 and "--write-unverified writes it without running it" in refused.output
    assert not out.exists()
    written = _cli("export", "specs/tutorial.yaml", "--format", "coreml", "-o", str(out), "--write-unverified",
                   *(f"--set={o}" for o in TINY))
    assert written.exit_code == 0, written.output
    last = written.output.strip().splitlines()[-1]
    assert last.startswith("NOT VERIFIED: Core ML runs models only on macOS") and "never run" in last
    import zipfile

    assert "model.mlpackage/Manifest.json" in zipfile.ZipFile(out).namelist()


def test_onnx_stays_the_default_and_format_onnx_is_export_onnx(tmp_path: Path) -> None:
    report = archspec.export("specs/tutorial.yaml", tmp_path / "t.onnx", overrides=TINY, batch_size=2)
    assert report.opset == 20 and report.verification.passed and report.params == TUTORIAL_PARAMS


# ---- every reference spec, in every format that runs here -------------------------------------------------


def _small(spec: str) -> tuple[str, ...]:
    """Overrides that make a reference spec small enough to convert in seconds: two layers per
    dense block, and the smallest input of 16 or 32 a side (256 long) that leaves every map 1 wide."""
    document = archspec.load_spec(spec)
    spatial = len(archspec.static_pass(document).input_shape) - 1
    names = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}.get(spatial, ())
    blocks = tuple(f"body[{i}].num_layers=2" for i, part in enumerate(document.body) if part.type == "dense_block")
    for side in ((256,) if spatial == 1 else (16, 32)):
        sizes = tuple(f"input.{name}={side}" for name in names)
        try:
            archspec.static_pass(archspec.load_spec(spec, sizes + blocks))
        except SpecError:
            continue
        return sizes + blocks
    return blocks


# One reference spec of every kind the format describes, where the suite's time allows all 17: an
# image classifier, feature vectors, a volume classifier, a backbone with named outputs,
# segmentation in 2D (transposed convolutions, U-Net) and 3D.
KINDS = ["specs/tutorial.yaml", "specs/mlp_tabular.yaml",
         "specs/monai/densenet121_3d.yaml", "specs/backbones/densenet121_features.yaml",
         "specs/segmentation/fc_densenet56.yaml", "specs/segmentation/unet_densenet121.yaml",
         "specs/segmentation/fc_densenet_3d.yaml"]


# Proven by the tests above: not again here.
COVERED = {("specs/tutorial.yaml", "torch-export"), ("specs/tutorial.yaml", "openvino"),
           ("specs/mlp_tabular.yaml", "openvino"), ("specs/monai/densenet121_3d.yaml", "openvino")}
RUNNABLE = [name for name in ("torch-export", "openvino", "executorch", "litert")
            if all(importlib.util.find_spec(package) for package in FORMATS[name].packages)]
# torch 2.14's size-oblivious export of the 3D FC-DenseNet guards its 1×1×1 bottleneck's positions
# (`sym_max(1, depth // 16) * … != 1`), so the second verification size is refused: a known limit.
GUARDED = pytest.mark.xfail(strict=True, reason="torch.export guards a 3D FC-DenseNet against a 1×1×1 bottleneck")


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "fmt"), [
    pytest.param(spec, fmt, marks=[GUARDED] if (spec, fmt) == ("specs/segmentation/fc_densenet_3d.yaml",
                                                                 "torch-export") else [])
    for spec in KINDS for fmt in RUNNABLE if (spec, fmt) not in COVERED])
def test_every_kind_of_spec_in_every_format_that_runs_here(tmp_path: Path, spec: str, fmt: str) -> None:
    overrides = _small(spec)
    spatial = len(archspec.static_pass(archspec.load_spec(spec, overrides)).input_shape) - 1
    if spatial not in FORMATS[fmt].spatial_dims:
        with pytest.raises(SpecError, match=f"{fmt} cannot express"):
            archspec.export(spec, tmp_path / f"m{FORMATS[fmt].suffix}", format=fmt, overrides=overrides)
        return
    report = archspec.export(spec, tmp_path / f"m{FORMATS[fmt].suffix}", format=fmt, overrides=overrides)
    assert report.passed and report.verification.max_relative_error < FORMATS[fmt].tolerance["fp32"]
    assert report.random_state is not None and report.random_state.passed
    assert np.isfinite(report.random_state.max_relative_error)
