"""Group and instance norm beyond images: a 3D group-norm and a 1D instance-norm network agree with PyTorch in
onnxruntime, OpenVINO (f32) and onnx2torch; OpenCV, which cannot run them, is refused before the export starts,
in one line naming the part; and the limit is OpenCV's real one (it fails on these files, runs the same norms
on images)."""

from __future__ import annotations

from collections.abc import Callable
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
from tests.test_runtimes import needs, run_onnxruntime
from tests.threads import one_torch_thread  # noqa: F401  (autouse)

pytestmark = pytest.mark.onnx

TUTORIAL = str(ROOT / "specs" / "tutorial.yaml")
VOLUMES = str(ROOT / "specs" / "monai" / "densenet121_3d.yaml")
# MONAI's 3D DenseNet-121 made small: two layers a block, growth 16, a 32³ volume (the ÷32 leaves 1×1×1
# for the head). Widths 64 → 96 → 48 → 80 → 40 → 72 → 36 → 68: four groups divide every one.
GROUP_NORM_3D = (VOLUMES, ("input.depth=32", "input.height=32", "input.width=32", "defaults.growth_rate=16",
                           *(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6)),
                           "defaults.norm={type: group_norm, groups: 4}"))
# The tutorial on a 256-sample signal: its head still sees 8 positions, which instance norm needs (≥ 2).
INSTANCE_NORM_1D = (TUTORIAL, ("input={type: signal, channels: 1, length: 256}", "defaults.norm=instance_norm"))
SPECS = {"group_norm_3d": GROUP_NORM_3D, "instance_norm_1d": INSTANCE_NORM_1D}
OPSET = 17  # one every runtime here loads (onnx2torch lacks newer op versions)
BOUND = 1e-4  # fp32 in another runtime reorders sums (tests/test_runtimes.py)


RUNNERS: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "onnxruntime": run_onnxruntime,
    **{name: runtime.run for name, runtime in runtimes.RUNTIMES.items()},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], tuple[Path, torch.Tensor, torch.Tensor]]:
    """Each spec exported once with seeded random norms and biases: (file, input, PyTorch's output)."""
    files: dict[str, tuple[Path, torch.Tensor, torch.Tensor]] = {}

    def get(name: str) -> tuple[Path, torch.Tensor, torch.Tensor]:
        if name not in files:
            spec, overrides = SPECS[name]
            folder = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            module = randomize_state(archspec.build(spec, overrides=overrides)).eval()
            torch.save(module.state_dict(), folder / "w.pt")
            report = archspec.export_onnx(spec, folder / "x.onnx", overrides=overrides, weights=folder / "w.pt",
                                          opset=OPSET, provider="cpu", batch_size=2)
            assert report.written, report
            shape = archspec.static_pass(archspec.load_spec(spec, overrides)).input_shape
            x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                files[name] = (folder / "x.onnx", x, module(x))
        return files[name]

    return get


@pytest.mark.parametrize("runtime", [pytest.param(name, marks=() if name == "onnxruntime" else needs(name))
                                     for name in RUNNERS if name != "opencv"])
@pytest.mark.parametrize("spec", SPECS)
def test_runtime_runs_group_and_instance_norm_off_images(exported, spec, runtime):
    path, x, expected = exported(spec)
    actual = torch.from_numpy(np.asarray(RUNNERS[runtime](path, x.numpy())))
    error = relative_error(actual, expected)
    assert error <= BOUND, f"{spec} in {runtime}: relative error {error:.3g} > {BOUND:g}"


@needs("opencv")
@pytest.mark.parametrize(("spec", "fails_in"), [("group_norm_3d", "fastNormGroupBlockF32"),
                                                ("instance_norm_1d", "InstanceNormLayerImpl::getMemoryShapes")])
def test_opencv_really_cannot_run_them(exported, spec, fails_in):
    # The refusal below is OpenCV's own limit: if a new OpenCV runs these files, this fails, and
    # runtimes.RUNTIMES["opencv"].norms_on should be widened.
    import cv2

    path, x, _ = exported(spec)
    with pytest.raises(cv2.error, match=fails_in):
        runtimes.RUNTIMES["opencv"].run(path, x.numpy())


@needs("opencv")
@pytest.mark.parametrize("norm", ["{type: group_norm, groups: 4}", "instance_norm"])
def test_opencv_runs_group_and_instance_norm_on_images(tmp_path, norm):
    # The limit is no wider than it is: on images OpenCV runs both norms, so they are not refused.
    # The tutorial with two layers a block and growth 16: widths 64, 96, 48, 80, 40, 72, 36, 68. At 128×128
    # (and the 96×80 case) the last block sees 4×4 (3×2): instance norm over the 2×1 positions that 96×96's
    # 72×60 case leaves is outside fp32's tolerance in onnxruntime already (an ill-conditioned variance).
    overrides = ("input.height=128", "input.width=128", "defaults.growth_rate=16",
                 *(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6)), f"defaults.norm={norm}")
    torch.manual_seed(0)
    module = randomize_state(archspec.build(TUTORIAL, overrides=overrides))
    torch.save(module.state_dict(), tmp_path / "w.pt")
    report = archspec.export_onnx(TUTORIAL, tmp_path / "x.onnx", overrides=overrides, weights=tmp_path / "w.pt",
                                  opset=OPSET, provider="cpu", batch_size=2, verify_with=("opencv",))
    (check,) = report.runtimes
    assert report.written and check.passed and len(check.cases) == 3, check
    assert max(case.max_abs_error for case in check.cases) < BOUND, check


MORE = "OpenCV 5.1 runs group and instance norms on images only; leave opencv out of --verify-with"


@pytest.mark.parametrize(("spec", "line"), [
    (GROUP_NORM_3D, f"{VOLUMES}:10:7: stem.norm: opencv cannot run group_norm on 3D input (volumes) "
                    f"(8 more parts use it): {MORE}"),
    (INSTANCE_NORM_1D, f"{TUTORIAL}:11:3: stem.norm: opencv cannot run instance_norm on 1D input (signals) "
                       f"(8 more parts use it): {MORE}"),
    # One part's own norm: the line points at it, and no other part is counted.
    ((TUTORIAL, ("input={type: signal, channels: 1, length: 256}", "body[2].norm={type: group_norm, groups: 4}")),
     f"{TUTORIAL}: body[2].norm: opencv cannot run group_norm on 1D input (signals): {MORE} "
     "(set by --set body[2].norm={type: group_norm, groups: 4})"),
])
def test_opencv_is_refused_before_the_export_starts(tmp_path, monkeypatch, spec, line):
    def never(*_, **__):
        raise AssertionError("the export started")

    monkeypatch.setattr("archspec.exporters.onnx.export_onnx", never)
    path, overrides = spec
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(main, ["export", path, *(arg for o in overrides for arg in ("--set", o)),
                                       "--onnx", str(out), "--verify-with", "opencv"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [line]
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


@pytest.mark.parametrize(("overrides", "refused"), [
    (("defaults.norm={type: group_norm, groups: 4}", "stem.hidden=[64, 128]", "defaults.growth_rate=16"),
     "body[0].norm: opencv cannot run group_norm on feature vectors (7 more parts use it)"),
    (("defaults.norm=layer_norm",), None),  # measured: OpenCV runs layer norm on feature vectors
    (("defaults.norm=batch_norm",), None),
])
def test_opencv_limit_on_feature_vectors(overrides, refused):
    result = archspec.static_pass(archspec.load_spec(ROOT / "specs" / "mlp_tabular.yaml", overrides))
    if refused is None:
        runtimes.check_runs(result, ("opencv", "openvino", "onnx2torch"))
        return
    with pytest.raises(archspec.SpecError) as caught:
        runtimes.check_runs(result, ("openvino", "opencv"))
    assert f"{caught.value.path}: {caught.value.message}".startswith(refused), caught.value


@pytest.mark.parametrize("spec", [GROUP_NORM_3D, INSTANCE_NORM_1D])
def test_other_runtimes_are_not_refused(spec):
    path, overrides = spec
    result = archspec.static_pass(archspec.load_spec(path, overrides))
    runtimes.check_runs(result, ("openvino", "onnx2torch", "tensorrt"))  # an unknown name is check_installed's
