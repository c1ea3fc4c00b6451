"""The public API's less travelled options: ``export_onnx(verify=False, tolerance=..., overrides=...)``,
``VerificationError`` raised to the caller, and ``load_weights`` on the tabular MLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import archspec
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error

MLP = ROOT / "specs" / "mlp_tabular.yaml"
# mlp_tabular.yaml header: 2,880,449 parameters, of which Linear(608, 1) is the regressor's 609.
MLP_PARAMS = 2_880_449
THREE_TARGETS = ("head.out_features=3",)
MLP3_PARAMS = MLP_PARAMS - 609 + (608 * 3 + 3)  # 2,881,667


def _save(model: torch.nn.Module, path: Path) -> Path:
    state = model.state_dict()
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x})
    return output


@pytest.mark.onnx
def test_export_with_overrides_and_without_verification(tmp_path: Path) -> None:
    out = tmp_path / "mlp3.onnx"
    report = archspec.export_onnx(MLP, out, overrides=THREE_TARGETS, verify=False, batch_size=3)
    assert (report.written, report.verification, report.params) == (True, None, MLP3_PARAMS)
    assert report.input_shape == ("batch", 330)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["archspec.verification"] == "not run"
    assert json.loads(meta["archspec.spec"])["head"]["out_features"] == 3
    x = np.random.default_rng(0).standard_normal((5, 330), dtype=np.float32)
    assert _run(out, x).shape == (5, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp3.onnx"]


@pytest.mark.onnx
def test_export_tolerance_is_the_one_verified_and_recorded(tmp_path: Path) -> None:
    weights = _save(randomize_state(archspec.build(MLP), seed=2), tmp_path / "w.pt")
    tolerance = archspec.Tolerance(rtol=0.02, atol=0.003)
    report = archspec.export_onnx(MLP, tmp_path / "mlp.onnx", weights=weights, tolerance=tolerance,
                                  provider="cpu", batch_size=2)
    assert report.verification.tolerance == tolerance
    assert [(c.name, c.passed) for c in report.verification.cases] == [("batch 1", True), ("batch 2", True)]
    stored = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "mlp.onnx")).metadata_props}
                        ["archspec.verification"])
    assert (stored["rtol"], stored["atol"], stored["passed"]) == (0.02, 0.003, True)


@pytest.mark.onnx
def test_verification_error_reaches_the_caller_with_its_report(tmp_path: Path) -> None:
    # Regressor weights of 3e38: each prediction sums hundreds of positive features times 3e38 and
    # overflows fp32 in PyTorch and in onnxruntime alike. Equal infinities are not a verified output.
    model = archspec.build(MLP)
    with torch.no_grad():
        model.regressor.weight.fill_(3e38)
    weights = _save(model, tmp_path / "overflow.pt")
    out = tmp_path / "mlp.onnx"
    with pytest.raises(archspec.VerificationError) as caught:
        archspec.export_onnx(MLP, out, weights=weights, provider="cpu", batch_size=2)
    assert str(caught.value) == (
        "verification failed (rtol 0.001, atol 0.0001): "
        "batch 1 (1, 330): max abs error n/a, max rel error n/a (1 of 1 outputs outside tolerance, 1 not finite); "
        "batch 2 (2, 330): max abs error n/a, max rel error n/a (2 of 2 outputs outside tolerance, 2 not finite)"
    )
    report = caught.value.report
    assert (report.written, report.verification.passed, report.params) == (False, False, MLP_PARAMS)
    assert [(c.outside_tolerance, c.non_finite) for c in report.verification.cases] == [(1, 1), (2, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overflow.pt"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_weights_on_the_mlp(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)  # the fresh network below draws other weights from the same generator
    source = randomize_state(archspec.build(MLP), seed=3).eval()
    path = _save(source, tmp_path / f"mlp{suffix}")
    target = archspec.build(MLP)
    assert archspec.load_weights(target, path) is target
    target.eval()
    expected_state, loaded_state = source.state_dict(), target.state_dict()
    assert list(loaded_state) == list(expected_state)
    unequal = [key for key in expected_state if not torch.equal(loaded_state[key], expected_state[key])]
    assert unequal == []
    x = torch.randn(4, 330, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = source(x)
        assert torch.equal(target(x), expected)
        fresh = archspec.build(MLP).eval()(x)
    assert relative_error(fresh, expected) > 0.1, "the load is what made them equal"


# The file's own key order: a state dict's for .pt, sorted for .safetensors.
@pytest.mark.parametrize(("suffix", "mismatches"), [
    (".pt", "regressor.weight (file (3, 608), model (1, 608)), regressor.bias (file (3), model (1))"),
    (".safetensors", "regressor.bias (file (3), model (1)), regressor.weight (file (3, 608), model (1, 608))"),
])
def test_mlp_weights_for_another_head_are_refused(tmp_path: Path, suffix: str, mismatches: str) -> None:
    path = _save(archspec.build(MLP, overrides=THREE_TARGETS), tmp_path / f"three{suffix}")
    model = archspec.build(MLP)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_weights(model, path)
    assert str(caught.value) == f"{path}: 2 shape mismatches: {mismatches}; to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)"
    changed = [key for key, value in model.state_dict().items() if not torch.equal(value, before[key])]
    assert changed == [], "a refused file leaves the network as it was"
