"""Deployment files made from a verified fp32 export: fp16, int8, and the preprocessing in the file.

The fp32 files are made with the public API (``archspec.export_onnx``) from seeded random
weights with non-trivial norm statistics (``tests/nontrivial.py``), once per module; every
test converts or checks them with ``archspec.exporters.deployment``. Measured figures are
in the comments (onnxruntime 1.31.1 CPU provider, torch 2.14.1).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import archspec
from archspec.exporters.calibration import read_calibration
from archspec.exporters.deployment import (
    FP16_PER_POSITION_TOLERANCE,
    FP16_TOLERANCE,
    INT8_PER_POSITION_TOLERANCE,
    INT8_CLASSIFIER_TOLERANCE,
    INT8_REGRESSOR_TOLERANCE,
    PRECISION_KEY,
    Deployment,
    check,
    deploy,
    settle,
)
from archspec.exporters.precision import int8_dot_product, to_fp16
from archspec.exporters.report import SpeedComparison
from archspec.exporters.preprocess_graph import BAKED_KEY, PREPROCESS_KEY, normalise, preprocess_metadata
from tests.conftest import ROOT
from tests.nontrivial import randomize_state
from tests.threads import one_torch_thread  # noqa: F401  (autouse)

pytestmark = pytest.mark.onnx

SPECS = ROOT / "specs"
TUTORIAL = SPECS / "tutorial.yaml"
# A small tabular regressor with a preprocess, so that regression and feature-wise
# normalisation are covered without exporting the 2.9M-parameter MLP.
SMALL_TABULAR = ("input.features=4", "stem.hidden=[16, 32]", "defaults.growth_rate=8",
                 "preprocess={mean: [0.1, 0.2, 0.3, 0.4], std: [1, 2, 3, 4]}")
TUTORIAL_CASES = (("batch 1", (1, 1, 96, 96)), ("batch 4", (4, 1, 96, 96)))
TABULAR_CASES = (("batch 1", (1, 4)), ("batch 4", (4, 4)))
CALIBRATION_INPUTS = 16


class Exported:
    """An fp32 file made by ``archspec.export_onnx``, the spec and the module holding the same weights."""

    def __init__(self, folder: Path, spec_path: Path, overrides: tuple[str, ...] = (), *, verify: bool = True):
        self.spec = archspec.load_spec(spec_path, overrides)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the convolutions' init: the figures in the comments are reproducible
            self.module = randomize_state(archspec.build(self.spec), seed=3).eval()
        weights = folder / "weights.pt"
        torch.save(self.module.state_dict(), weights)
        self.path = folder / "fp32.onnx"
        archspec.export_onnx(self.spec, self.path, weights=weights, provider="cpu", verify=verify)
        self.model = onnx.load(self.path)
        self.bytes = self.path.stat().st_size
        self.folder = folder

    def calibration(self, name: str = "calibration.npy", *, uniform: bool = False) -> Path:
        """Seeded inputs of the spec's shape: normal (as the module takes them) or uniform in [0, 1)."""
        rng = np.random.default_rng(7)
        shape = (CALIBRATION_INPUTS, *self.spec.input.sample_shape())
        values = rng.random(shape) if uniform else rng.standard_normal(shape)
        path = self.folder / name
        np.save(path, values.astype(np.float32))
        return path


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> Exported:
    return Exported(tmp_path_factory.mktemp("tutorial"), TUTORIAL)


@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> Exported:
    return Exported(tmp_path_factory.mktemp("tabular"), SPECS / "mlp_tabular.yaml", SMALL_TABULAR)


@pytest.fixture(scope="module")
def tutorial_fp16(tutorial):
    return deploy(tutorial.model, tutorial.module, tutorial.spec, settle(tutorial.spec, precision="fp16"),
                  TUTORIAL_CASES)


@pytest.fixture(scope="module")
def tutorial_int8(tutorial):
    deployment = settle(tutorial.spec, precision="int8", calibration=tutorial.calibration())
    return deploy(tutorial.model, tutorial.module, tutorial.spec, deployment, TUTORIAL_CASES)


def _size_ratio(model: onnx.ModelProto, exported: Exported) -> float:
    return len(model.SerializeToString()) / exported.bytes


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _elem_types(model: onnx.ModelProto) -> tuple[int, int]:
    return (model.graph.input[0].type.tensor_type.elem_type, model.graph.output[0].type.tensor_type.elem_type)


# ---- fp16 -----------------------------------------------------------------------------


def test_fp16_file_is_half_the_size_and_within_its_tolerance(tutorial, tutorial_fp16):
    model, verdict = tutorial_fp16
    onnx.checker.check_model(model, full_check=True)
    assert _size_ratio(model, tutorial) <= 0.55, f"{_size_ratio(model, tutorial):.3f}× the fp32 file"  # 0.507
    assert _elem_types(model) == (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT), "io stays float32 by default"
    assert verdict is not None and verdict.passed, [case.describe() for case in verdict.cases]
    assert verdict.tolerance == FP16_TOLERANCE and FP16_TOLERANCE.max_relative_error == 1e-2
    assert [(case.name, case.input_shape) for case in verdict.cases] == list(TUTORIAL_CASES)
    for case in verdict.cases:
        # Measured 5.8e-4 and 6.0e-4 of the largest logit (1.65, 1.68): fp16's rounding, not a bug.
        assert case.relative_error is not None and 1e-5 < case.relative_error < 2e-3, case.describe()
        assert case.top1_agreement == 1.0 and case.non_finite == 0, case.describe()
    assert verdict.summary()["tolerance"] == "max error ≤ 0.01 of the largest output"


def test_fp16_weights_are_fp16_and_batch_norms_after_a_conv_are_folded(tutorial, tutorial_fp16):
    model, _ = tutorial_fp16
    kinds = {t.data_type for t in model.graph.initializer if t.data_type in (1, 10)}
    assert kinds == {onnx.TensorProto.FLOAT16}, "every float weight is stored as fp16"
    # The tutorial has 21 BatchNorms: norm0 follows conv0 and folds into it; the 16 layer
    # norms, 3 transition norms and norm5 follow a concatenation or pooling and stay.
    assert _ops(tutorial.model).count("BatchNormalization") == 21
    assert _ops(model).count("BatchNormalization") == 20
    assert "features.norm0" not in {node.name for node in model.graph.node}


def test_fp16_io_option_makes_input_and_output_float16(tutorial):
    deployment = settle(tutorial.spec, precision="fp16", io_fp16=True)
    model, verdict = deploy(tutorial.model, tutorial.module, tutorial.spec, deployment, TUTORIAL_CASES[1:])
    assert _elem_types(model) == (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT16)
    assert verdict is not None and verdict.passed and verdict.io_dtype == "float16", verdict.cases
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": np.zeros((2, 1, 96, 96), np.float16)})
    assert output.dtype == np.float16 and output.shape == (2, 10)


def _overflowing(tutorial: Exported) -> torch.nn.Module:
    """The tutorial's module with classifier weights ×4e5: weights stay below 25,400, logits pass 65504."""
    module = archspec.build(tutorial.spec).eval()
    module.load_state_dict(tutorial.module.state_dict())
    with torch.no_grad():
        module.classifier.weight.mul_(4e5)
    return module


def test_fp16_refuses_a_network_whose_outputs_overflow(tutorial, tmp_path):
    module = _overflowing(tutorial)
    weights = tmp_path / "w.pt"
    torch.save(module.state_dict(), weights)
    path = tmp_path / "big.onnx"
    archspec.export_onnx(tutorial.spec, path, weights=weights, provider="cpu")  # fine in fp32
    with pytest.raises(archspec.SpecError) as caught:
        deploy(onnx.load(path), module, tutorial.spec, settle(tutorial.spec, precision="fp16"), TUTORIAL_CASES)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("--precision: fp16 overflow: classifier reaches ")
    assert message.endswith(" on the verification inputs, beyond fp16's largest value 65504; export in fp32 or int8")


def test_fp16_refuses_weights_beyond_its_range(tutorial, tmp_path):
    module = archspec.build(tutorial.spec).eval()
    module.load_state_dict(tutorial.module.state_dict())
    norm = module.features.denseblock1.denselayer1.norm
    with torch.no_grad():
        norm.running_var[0] = 1e6  # a norm after a concatenation: stays a node, its variance an initializer
    weights, path = tmp_path / "w.pt", tmp_path / "var.onnx"
    torch.save(module.state_dict(), weights)
    archspec.export_onnx(tutorial.spec, path, weights=weights, provider="cpu")
    with pytest.raises(archspec.SpecError) as caught:
        deploy(onnx.load(path), module, tutorial.spec, settle(tutorial.spec, precision="fp16"), TUTORIAL_CASES)
    assert str(caught.value) == ("--precision: fp16 overflow: weight features.denseblock1.denselayer1.norm.running_var "
                                 "holds 1e+06, beyond fp16's largest value 65504")


def test_fp16_output_overflow_is_refused_even_past_the_activation_check(tutorial):
    # The check itself refuses infinite fp16 outputs where PyTorch's are finite: here the
    # conversion is called directly, without deploy's activation check in front. With a
    # float16 output even the CPU provider shows the overflow; with a float32 one it runs
    # the last Gemm in fp32 (it has no fp16 kernel) and drops the casts around it.
    module = _overflowing(tutorial)
    model = to_fp16(_fp32_graph(tutorial, module), io_fp16=True)
    with pytest.raises(archspec.SpecError) as caught:
        check(model, module, tutorial.spec, Deployment(precision="fp16", io_fp16=True), TUTORIAL_CASES[:1])
    assert str(caught.value).startswith("--precision: fp16 overflow: ")
    assert "of the fp16 file's outputs on batch 1 are NaN or infinite where PyTorch's are finite" in str(caught.value)


def _fp32_graph(tutorial: Exported, module: torch.nn.Module) -> onnx.ModelProto:
    """The tutorial's fp32 graph holding ``module``'s classifier weights."""
    model = onnx.ModelProto()
    model.CopyFrom(tutorial.model)
    for tensor in model.graph.initializer:
        if tensor.name == "classifier.weight":
            tensor.CopyFrom(onnx.numpy_helper.from_array(module.classifier.weight.detach().numpy(), tensor.name))
    return model


# ---- int8 -----------------------------------------------------------------------------


def test_int8_file_is_a_third_of_the_size_and_agrees_on_the_calibration_inputs(tutorial, tutorial_int8):
    model, verdict = tutorial_int8
    onnx.checker.check_model(model, full_check=True)
    assert _size_ratio(model, tutorial) <= 0.35, f"{_size_ratio(model, tutorial):.3f}× the fp32 file"  # 0.292
    assert verdict is not None and verdict.passed, [case.describe() for case in verdict.cases]
    assert verdict.tolerance == INT8_CLASSIFIER_TOLERANCE
    assert (INT8_CLASSIFIER_TOLERANCE.min_top1_agreement, INT8_CLASSIFIER_TOLERANCE.max_relative_error) == (0.9, 0.1)
    case, *seeded = verdict.cases
    assert case.name == f"calibration ({CALIBRATION_INPUTS} inputs)"
    assert case.input_shape == (CALIBRATION_INPUTS, 1, 96, 96)
    assert case.top1_agreement == 1.0, case.describe()  # 16 of 16
    # Measured 1.3e-2 of the largest logit: int8 rounds each activation to 1/255 of its range.
    assert case.relative_error is not None and 1e-3 < case.relative_error < 5e-2, case.describe()
    # Then the fp32 verification's seeded inputs (1.3e-2 and 1.6e-2), judged by the error alone.
    assert [(c.name, c.input_shape) for c in seeded] == list(TUTORIAL_CASES)
    for case in seeded:
        assert case.relative_error is not None and 1e-3 < case.relative_error < 5e-2, case.describe()
        assert case.top1_agreement is None, "agreement is judged on the calibration inputs only"
    assert verdict.inputs == (f"calibration array {tutorial.folder / 'calibration.npy'} ({CALIBRATION_INPUTS} "
                              f"inputs) and seeded standard normal")


def test_int8_calibrated_on_wrongly_scaled_inputs_fails(tutorial):
    # Calibrated on the inputs × 0.05, the file's ranges are 20 times too narrow: on those inputs
    # it agrees (1.2e-2 of the largest logit, top-1 16 of 16), on the spec's input scale it is
    # 0.57 of the largest logit off (0.27 for DenseNet-BC-100) and still picks the same class.
    scaled = tutorial.folder / "scaled.npy"
    np.save(scaled, np.load(tutorial.calibration()) * np.float32(0.05))
    deployment = settle(tutorial.spec, precision="int8", calibration=scaled)
    _, verdict = deploy(tutorial.model, tutorial.module, tutorial.spec, deployment, TUTORIAL_CASES)
    assert verdict is not None and not verdict.passed, [case.describe() for case in verdict.cases]
    calibration, *seeded = verdict.cases
    assert calibration.passed and calibration.relative_error < 0.05, calibration.describe()
    for case in seeded:
        assert not case.passed and 0.3 < case.relative_error, case.describe()
        assert case.describe().endswith("(FAILED)") and case.non_finite == 0, case.describe()


def test_int8_is_qdq_with_per_channel_weights(tutorial, tutorial_int8):
    model, _ = tutorial_int8
    ops = _ops(model)
    assert ops.count("Conv") == 20 and ops.count("Gemm") == 1
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    initializers = {t.name: t for t in model.graph.initializer}
    conv1 = next(n for n in model.graph.node if n.op_type == "Conv"
                 and n.name.startswith("features.denseblock1.denselayer1"))
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv1.input[1])
    assert weight_dq.op_type == "DequantizeLinear"
    scale, quantized = initializers[weight_dq.input[1]], initializers[weight_dq.input[0]]
    assert tuple(scale.dims) == (32,), "one scale per output channel (growth rate 32)"
    assert quantized.data_type == onnx.TensorProto.INT8
    activation_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert initializers[activation_q.input[2]].data_type == onnx.TensorProto.UINT8, "u8 activations"


def test_int8_regressor_is_judged_by_its_relative_error(tabular):
    deployment = settle(tabular.spec, precision="int8", calibration=tabular.calibration())
    model, verdict = deploy(tabular.model, tabular.module, tabular.spec, deployment, TABULAR_CASES)
    assert verdict is not None and verdict.tolerance == INT8_REGRESSOR_TOLERANCE
    assert [case.input_shape for case in verdict.cases] == [(CALIBRATION_INPUTS, 4), (1, 4), (4, 4)]
    for case in verdict.cases:
        assert case.top1_agreement is None, "a regressor has no classes"
        assert case.relative_error is not None and case.relative_error <= 0.1, case.describe()
    assert verdict.passed
    # No size bound here: in a network this small, scales and zero points outweigh the weights saved.


def test_int8_check_can_fail(tutorial, tutorial_int8, tabular):
    # A random network picks nearly the same class for every input (its pooled features vary
    # by a few per cent between inputs, its biases by more), so top-1 agreement says that the
    # file keeps the network's decisions, and the relative error is the sharper figure. A
    # module whose classifier biases are rotated decides otherwise: the check must see that.
    model, _ = tutorial_int8
    stranger = archspec.build(tutorial.spec).eval()
    stranger.load_state_dict(tutorial.module.state_dict())
    with torch.no_grad():
        stranger.classifier.bias.copy_(torch.roll(stranger.classifier.bias, 1) * 10)
    deployment = settle(tutorial.spec, precision="int8", calibration=tutorial.calibration())
    verdict = check(model, stranger, tutorial.spec, deployment, ())
    assert not verdict.passed and verdict.cases[0].top1_agreement < 0.9, verdict.cases[0].describe()
    assert verdict.cases[0].describe().endswith("(FAILED)")


# ---- preprocess -------------------------------------------------------------------------


def test_preprocess_metadata_is_the_spec_preprocess_as_json(tutorial_fp16, tabular):
    model, _ = tutorial_fp16
    meta = _metadata(model)
    assert meta[PREPROCESS_KEY] == '{"mean": [0.286], "std": [0.353]}'
    assert meta[BAKED_KEY] == "false" and meta[PRECISION_KEY] == "fp16"
    assert json.loads(meta["archspec.deployment_check"])["passed"] is True
    assert meta["archspec.spec_sha256"], "the fp32 export's metadata is kept"
    no_preprocess = archspec.load_spec(SPECS / "mlp_tabular.yaml")
    assert preprocess_metadata(no_preprocess, baked=False) == {}
    densenet = archspec.load_spec(SPECS / "densenet121.yaml")
    assert json.loads(preprocess_metadata(densenet, baked=True)[PREPROCESS_KEY]) == {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": 256, "crop": 224}


def test_baked_file_takes_raw_input_and_matches_pytorch_on_normalised_input(tutorial):
    model, verdict = deploy(tutorial.model, tutorial.module, tutorial.spec,
                            settle(tutorial.spec, bake_preprocess=True), TUTORIAL_CASES)
    onnx.checker.check_model(model, full_check=True)
    assert _ops(model)[:2] == ["Sub", "Div"] and model.graph.input[0].name == "input"
    assert _metadata(model)[BAKED_KEY] == "true" and _metadata(model)[PRECISION_KEY] == "fp32"
    assert verdict is not None and verdict.passed and verdict.inputs == "seeded uniform in [0, 1)"
    for case in verdict.cases:  # measured 5.5e-7 of the largest logit
        assert case.relative_error is not None and case.relative_error < 1e-5, case.describe()
    # Independently: the baked file on raw pixels equals the plain file on normalised ones.
    raw = np.random.default_rng(1).random((3, 1, 96, 96), dtype=np.float32)
    baked = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(tutorial.path), providers=["CPUExecutionProvider"])
    (got,) = baked.run(None, {"input": raw})
    (want,) = plain.run(None, {"input": (raw - np.float32(0.286)) / np.float32(0.353)})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_baking_with_fp16_and_on_feature_vectors(tutorial, tabular):
    _, verdict = deploy(tutorial.model, tutorial.module, tutorial.spec,
                        settle(tutorial.spec, precision="fp16", bake_preprocess=True), TUTORIAL_CASES[:1])
    assert verdict is not None and verdict.passed and verdict.preprocess_baked, verdict.cases
    calibration = tabular.calibration("raw.npy", uniform=True)  # a baked int8 file calibrates on raw input
    deployment = settle(tabular.spec, precision="int8", calibration=calibration, bake_preprocess=True)
    model, verdict = deploy(tabular.model, tabular.module, tabular.spec, deployment, TABULAR_CASES)
    assert verdict is not None and verdict.passed, verdict.cases
    raw = np.load(calibration)[:2]
    expected = tabular.module(torch.from_numpy(normalise(raw, tabular.spec.preprocess, (4,)))).detach().numpy()
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": raw})
    assert np.abs(got - expected).max() <= 0.1 * np.abs(expected).max()


# ---- refusals ---------------------------------------------------------------------------


def test_refused_options_are_one_line_each():
    spec = archspec.load_spec(TUTORIAL)
    tabular = archspec.load_spec(SPECS / "mlp_tabular.yaml")
    cases = [
        (dict(precision="int8"), "--precision: int8 needs calibration inputs: --calibration FILE.npy, an array "
                                 "of shape (N, 1, 96, 96); archspec does not calibrate on random data"),
        (dict(precision="bf16"), "--precision: unknown precision 'bf16'; choose one of fp32, fp16, int8"),
        (dict(precision="fp16", calibration="c.npy"),
         "--calibration: calibration inputs apply to --precision int8, not fp16"),
        (dict(precision="fp32", io_fp16=True), "--io: float16 input and output apply to --precision fp16, not fp32"),
    ]
    for options, message in cases:
        with pytest.raises(archspec.SpecError) as caught:
            settle(spec, **options)
        assert str(caught.value) == message
    with pytest.raises(archspec.SpecError) as caught:
        settle(tabular, bake_preprocess=True)
    assert str(caught.value) == ("--bake-preprocess: the spec declares no preprocess mean and std to put into the "
                                 "graph; add preprocess: {mean: [...], std: [...]}")


def _bad_arrays(folder: Path) -> list[tuple[Path, str]]:
    good = np.zeros((2, 1, 96, 96), np.float32)
    nan = good.copy()
    nan[1, 0, 3, 4] = np.nan
    inf = good.copy()
    inf[0, 0, 0, 1] = np.inf
    inf[1, 0, 0, 0] = -np.inf
    cases = {
        "shape.npy": (np.zeros((2, 3, 96, 96), np.float32),
                      "shape (2, 3, 96, 96); expected (N, 1, 96, 96): N inputs of the spec's input shape"),
        "rank.npy": (np.zeros((1, 96, 96), np.float32),
                     "shape (1, 96, 96); expected (N, 1, 96, 96): N inputs of the spec's input shape"),
        "dtype.npy": (np.zeros((2, 1, 96, 96), np.uint8),
                      "dtype uint8; calibration inputs are floating point (float32), as the file takes them"),
        "empty.npy": (np.zeros((0, 1, 96, 96), np.float32),
                      "shape (0, 1, 96, 96) holds no inputs; expected (N, 1, 96, 96) with N ≥ 1"),
        "nan.npy": (nan, "1 NaN value (first at index (1, 0, 3, 4)); calibration inputs must be finite"),
        "inf.npy": (inf, "2 infinite values (first at index (0, 0, 0, 1)); calibration inputs must be finite"),
        "big.npy": (np.full((1, 1, 96, 96), 1e300),
                    "9,216 infinite values (first at index (0, 0, 0, 0)); calibration inputs must be finite"),
        "objects.npy": (np.array([[1.0], "x"], dtype=object),
                        "dtype object (pickled Python objects); calibration inputs are floating point (float32), "
                        "as the file takes them"),
    }
    made = []
    for name, (array, message) in cases.items():
        np.save(folder / name, array, allow_pickle=True)
        made.append((folder / name, message))
    np.savez(folder / "archive.npz", x=good)
    made.append((folder / "archive.npz", "an .npz archive; give one array saved with numpy.save (.npy)"))
    (folder / "text.npy").write_text("not numpy")
    made.append((folder / "text.npy", "not a .npy file (numpy.save writes one)"))
    np.save(folder / "cut.npy", good)
    (folder / "cut.npy").write_bytes((folder / "cut.npy").read_bytes()[:1000])
    made.append((folder / "cut.npy", "not a readable .npy array: Failed to read all data for array. Expected "
                                     "(2, 1, 96, 96) = 18432 elements, could only read 218 elements. (file seems "
                                     "not fully written?)"))
    made.append((folder / "missing.npy", "cannot read the calibration array: No such file or directory"))
    made.append((folder, "cannot read the calibration array: it is a directory"))
    return made


def test_bad_calibration_arrays_are_refused_with_one_line(tmp_path):
    spec = archspec.load_spec(TUTORIAL)
    for path, message in _bad_arrays(tmp_path):
        with pytest.raises(archspec.SpecError) as caught:
            settle(spec, precision="int8", calibration=path)
        assert str(caught.value) == f"{path}: {message}", path.name
    good = tmp_path / "good.npy"
    np.save(good, np.ones((3, 1, 96, 96)))  # float64 is taken, as float32
    inputs = read_calibration(good, (1, 96, 96))
    assert inputs.dtype == np.float32 and inputs.shape == (3, 1, 96, 96) and inputs.flags.c_contiguous


# ---- through archspec.export_onnx and `archspec export` ---------------------------------


def test_every_export_with_a_preprocess_carries_it(tutorial, tabular):
    meta = _metadata(tutorial.model)  # a plain fp32 export
    assert meta[PREPROCESS_KEY] == '{"mean": [0.286], "std": [0.353]}'
    assert (meta[BAKED_KEY], meta[PRECISION_KEY]) == ("false", "fp32")
    assert "archspec.deployment_check" not in meta, "a plain fp32 file has only the fp32 verification"
    assert json.loads(_metadata(tabular.model)[PREPROCESS_KEY]) == {"mean": [0.1, 0.2, 0.3, 0.4], "std": [1, 2, 3, 4]}


def test_export_onnx_writes_an_fp16_file_and_reports_its_check(tutorial, tmp_path):
    out = tmp_path / "half.onnx"
    report = archspec.export_onnx(tutorial.spec, out, weights=tutorial.folder / "weights.pt", provider="cpu",
                                  precision="fp16", batch_size=2)
    assert report.written and report.precision == "fp16" and report.verification.passed
    assert report.file_bytes == out.stat().st_size and report.file_bytes <= 0.55 * tutorial.bytes
    check_ = report.deployment
    assert check_ is not None and check_.passed and check_.tolerance == FP16_TOLERANCE
    assert [case.name for case in check_.cases] == ["batch 1", "batch 2", "batch 2 at 72×60"]
    data = json.loads(report.to_json())
    assert data["precision"] == "fp16" and data["deployment"]["passed"] is True
    assert data["deployment"]["tolerance"] == {"max_relative_error": 0.01, "min_top1_agreement": None}
    meta = _metadata(onnx.load(out))
    assert meta[PRECISION_KEY] == "fp16" and json.loads(meta["archspec.deployment_check"])["passed"] is True


def test_export_onnx_static_int8_pads_the_last_calibration_batch(tabular, tmp_path):
    # A static graph takes exactly its batch (3 here): 16 inputs are fed as 5 full batches and
    # one padded with copies, and the check compares the 16 outputs only.
    out = tmp_path / "static-int8.onnx"
    report = archspec.export_onnx(tabular.spec, out, weights=tabular.folder / "weights.pt", provider="cpu",
                                  static=True, batch_size=3, precision="int8", calibration=tabular.calibration())
    assert report.written and report.input_shape == (3, 4)
    assert [case.input_shape for case in report.deployment.cases] == [(CALIBRATION_INPUTS, 4), (3, 4)]
    assert all(case.passed for case in report.deployment.cases), report.deployment.cases
    assert report.deployment.speed is not None and report.deployment.speed.batch == 3


def test_export_onnx_refuses_to_write_a_file_whose_check_failed(tutorial, tmp_path, monkeypatch):
    from archspec.exporters import deployment
    from archspec.exporters.report import DeploymentTolerance

    monkeypatch.setattr(deployment, "tolerance_for", lambda *_, **__: DeploymentTolerance(max_relative_error=1e-9))
    out = tmp_path / "never.onnx"
    with pytest.raises(archspec.VerificationError) as caught:
        archspec.export_onnx(tutorial.spec, out, weights=tutorial.folder / "weights.pt", provider="cpu",
                             precision="int8", calibration=tutorial.calibration())
    message = str(caught.value)
    assert message.startswith("int8 check failed (max error ≤ 1e-09 of the largest output): calibration (16 inputs) "
                              "(16, 1, 96, 96): max error ") and message.endswith("(FAILED)")
    assert not out.exists() and not caught.value.report.written
    assert caught.value.report.deployment is not None and not caught.value.report.deployment.passed


def _cli(*args: str):
    from click.testing import CliRunner

    from archspec.cli import main

    return CliRunner().invoke(main, ["export", *args])


def test_cli_int8_export_prints_the_check(tutorial, tmp_path):
    out = tmp_path / "cli-int8.onnx"
    result = _cli(str(TUTORIAL), "--onnx", str(out), "--weights", str(tutorial.folder / "weights.pt"),
                  "--provider", "cpu", "--precision", "int8", "--calibration", str(tutorial.calibration()),
                  "--bake-preprocess", "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {out}: 0.9 MB, 758,226 parameters, opset 20, archspec exporter, int8")
    assert lines[2].startswith("fp32 graph verified on CPUExecutionProvider")
    header = lines.index(f"int8 file (preprocess baked in) checked against the fp32 module on CPUExecutionProvider, "
                         f"max error ≤ 0.1 of the largest output, top-1 agreement ≥ 90% on the calibration inputs, "
                         f"inputs calibration array {tutorial.folder / 'calibration.npy'} (16 inputs) and seeded "
                         f"uniform in [0, 1):")
    # Not the 72×60 case: int8 is checked at the size its ranges were calibrated at.
    calibration, batch1, batch4, speed, *words = lines[header + 1:]
    assert calibration.startswith("  calibration (16 inputs) (16, 1, 96, 96): max error ")
    assert calibration.endswith("top-1 agreement 100.0% (ok)")
    assert batch1.startswith("  batch 1 (1, 1, 96, 96): max error ") and batch1.endswith(" (ok)")
    assert batch4.startswith("  batch 4 (4, 1, 96, 96): max error ") and batch4.endswith(" (ok)")
    support = int8_dot_product()
    target = "" if support == "unknown" or support.startswith("none") else ", target ≤ 0.9×"
    assert re.fullmatch(rf"int8 latency on CPUExecutionProvider: batch 4 [0-9.]+ ms, fp32 [0-9.]+ ms: [0-9.]+× "
                        rf"\(median of 3{target}; CPU integer dot product: {re.escape(support)}\)", speed), speed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == "int8" and report["deployment"]["preprocess_baked"] is True
    timing = report["deployment"]["speed"]
    assert timing["cpu_int8_dot_product"] == support and timing["batch"] == 4 and timing["rounds"] == 3
    assert timing["ratio"] == timing["milliseconds"] / timing["fp32_milliseconds"]
    assert (words != []) == (timing["ratio"] >= 1 or (target != "" and timing["ratio"] > 0.9)), words
    assert _metadata(onnx.load(out))[BAKED_KEY] == "true"


def test_cli_refusals_exit_2_with_one_line_and_write_nothing(tutorial, tmp_path):
    bad = tmp_path / "nan.npy"
    values = np.zeros((2, 1, 96, 96), np.float32)
    values[0, 0, 1, 2] = np.nan
    np.save(bad, values)
    big = tmp_path / "big.pt"
    torch.save(_overflowing(tutorial).state_dict(), big)
    out = tmp_path / "x.onnx"
    cases = [
        ((str(TUTORIAL), "--precision", "int8"),
         "error: --precision: int8 needs calibration inputs: --calibration FILE.npy, an array of shape "
         "(N, 1, 96, 96); archspec does not calibrate on random data"),
        ((str(TUTORIAL), "--precision", "int8", "--calibration", str(bad)),
         f"{bad}: 1 NaN value (first at index (0, 0, 1, 2)); calibration inputs must be finite"),
        ((str(TUTORIAL), "--io", "fp16"), "error: --io: float16 input and output apply to --precision fp16, not fp32"),
        ((str(SPECS / "mlp_tabular.yaml"), "--bake-preprocess"),
         "error: --bake-preprocess: the spec declares no preprocess mean and std to put into the graph; "
         "add preprocess: {mean: [...], std: [...]}"),
        ((str(TUTORIAL), "--precision", "fp16", "--weights", str(big)),
         "error: --precision: fp16 overflow: classifier reaches "),
    ]
    for args, line in cases:
        result = _cli(*args, "--onnx", str(out), "--provider", "cpu")
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.splitlines()) == 1 and result.output.startswith(line), result.output
        assert not out.exists() and not list(tmp_path.glob(".x.onnx.*")), args


# ---- int8 speed: the CPU's integer dot product, and the words when int8 is not faster --------

_CPUINFO = "processor\t: 0\nmodel name\t: x\nflags\t\t: fpu sse2 avx avx2 {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(("text", "found"), [
    (_CPUINFO.format(extra=""), "none (AVX2)"),
    (_CPUINFO.format(extra="avx512f avx512bw avx512_vnni"), "AVX-512 VNNI"),
    (_CPUINFO.format(extra="avx_vnni amx_tile amx_int8"), "AVX-VNNI, AMX"),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp\n", "Arm dot product"),
    ("processor\t: 0\nFeatures\t: fp asimd\n", "none (Arm NEON)"),
    ("processor\t: 0\n", "unknown"),
])
def test_cpu_int8_dot_product_is_read_from_cpuinfo(text, found):
    assert int8_dot_product(text) == found


def test_int8_not_faster_says_so_in_words():
    slow = SpeedComparison(provider="CPUExecutionProvider", batch=4, input_shape=(4, 1, 96, 96), milliseconds=24.0,
                           fp32_milliseconds=20.0, rounds=3, cpu_int8_dot_product="none (AVX2)", target=None)
    assert slow.lines("int8") == [
        "int8 latency on CPUExecutionProvider: batch 4 24.0 ms, fp32 20.0 ms: 1.20× (median of 3; "
        "CPU integer dot product: none (AVX2))",
        "the int8 file is not faster than fp32 on this machine (1.20× its time): this CPU has no integer "
        "dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX); it is smaller, not quicker, here"]
    vnni = dataclasses.replace(slow, cpu_int8_dot_product="AVX-512 VNNI", target=0.9)
    assert vnni.lines("int8")[1] == ("the int8 file is not faster than fp32 on this machine (1.20× its time): "
                                     "although this CPU has AVX-512 VNNI; it is smaller, not quicker, here")
    assert dataclasses.replace(vnni, milliseconds=19.0).lines("int8")[1] == (
        "the int8 file is faster than fp32 here, but misses the 0.9× target for a CPU with AVX-512 VNNI")
    assert len(dataclasses.replace(vnni, milliseconds=14.0).lines("int8")) == 1, "0.70×: nothing to add"
    assert len(dataclasses.replace(slow, milliseconds=19.0).lines("int8")) == 1, "faster, and no target here"


def test_cli_int8_export_ends_saying_it_is_not_faster(tabular, tmp_path, monkeypatch):
    from archspec.exporters import deployment

    measured = []

    def slower(model, fp32, x, providers, **_):
        measured.append(x.shape)
        return SpeedComparison(provider="CPUExecutionProvider", batch=len(x), input_shape=tuple(x.shape),
                               milliseconds=12.0, fp32_milliseconds=10.0, rounds=3,
                               cpu_int8_dot_product="none (AVX2)", target=None)

    monkeypatch.setattr(deployment, "compare_speed", slower)
    out = tmp_path / "slow.onnx"
    result = _cli(str(SPECS / "mlp_tabular.yaml"), *(arg for o in SMALL_TABULAR for arg in ("--set", o)),
                  "--onnx", str(out), "--weights", str(tabular.folder / "weights.pt"), "--provider", "cpu",
                  "--precision", "int8", "--calibration", str(tabular.calibration()),
                  "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert measured == [(4, 4)], "timed once, on the larger verification batch"
    assert result.output.splitlines()[-2:] == [
        "int8 latency on CPUExecutionProvider: batch 4 12.0 ms, fp32 10.0 ms: 1.20× (median of 3; "
        "CPU integer dot product: none (AVX2))",
        "the int8 file is not faster than fp32 on this machine (1.20× its time): this CPU has no integer "
        "dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX); it is smaller, not quicker, here"]
    speed = json.loads((tmp_path / "r.json").read_text())["deployment"]["speed"]
    assert (speed["cpu_int8_dot_product"], speed["ratio"], speed["target"]) == ("none (AVX2)", 1.2, None)


# FC-DenseNet56 at 64×64 (÷32 at the bottleneck), two inputs per case: its fp32 file is exported
# unverified (tests/test_segmentation.py proves the fp32 graph); each converted file is checked here.
FC56 = SPECS / "segmentation" / "fc_densenet56.yaml"
SEGMENTATION_CASES = (("batch 2", (2, 3, 64, 64)),)
SEGMENTATION_CALIBRATION = 4


@pytest.fixture(scope="module")
def fc56(tmp_path_factory) -> Exported:
    return Exported(tmp_path_factory.mktemp("fc56"), FC56, ("input.height=64", "input.width=64"), verify=False)


def _segmentation_calibration(fc56: Exported, folder: Path, scale: float = 1.0) -> Path:
    path = folder / f"calibration-{scale:g}.npy"
    values = np.random.default_rng(7).standard_normal((SEGMENTATION_CALIBRATION, 3, 64, 64)) * scale
    np.save(path, values.astype(np.float32))
    return path


def _per_pixel_agreement(model: onnx.ModelProto, module: torch.nn.Module, x: np.ndarray) -> float:
    """The file's class at every pixel against PyTorch's, computed here apart from ``check``."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (len(x), 11, 64, 64)
    return float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))


def test_fp16_segmentation_is_judged_per_pixel(fc56):
    model, verdict = deploy(fc56.model, fc56.module, fc56.spec, settle(fc56.spec, precision="fp16"),
                            SEGMENTATION_CASES)
    assert verdict is not None and verdict.passed, [case.describe() for case in verdict.cases]
    assert verdict.tolerance == FP16_PER_POSITION_TOLERANCE
    assert verdict.tolerance.describe() == ("max error ≤ 0.01 of the largest output, "
                                            "per-pixel agreement ≥ 99% on every case")
    (case,) = verdict.cases
    x = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(0)).numpy()  # the check's seed 0
    assert case.top1_agreement == _per_pixel_agreement(model, fc56.module, x)
    # Measured 0.5e-3 to 0.7e-3 of the largest score, 99.90% to 100% of 8,192 pixels agreeing.
    assert 0.99 <= case.top1_agreement <= 1.0 and 1e-4 < case.relative_error < 2e-3, case.describe()
    assert ", per-pixel agreement " in case.describe() and case.describe().endswith("(ok)")


def test_int8_segmentation_agrees_per_pixel_and_a_badly_calibrated_file_fails(fc56, tmp_path):
    calibration = _segmentation_calibration(fc56, tmp_path)
    model, verdict = deploy(fc56.model, fc56.module, fc56.spec,
                            settle(fc56.spec, precision="int8", calibration=calibration), SEGMENTATION_CASES)
    assert verdict is not None and verdict.passed, [case.describe() for case in verdict.cases]
    assert verdict.tolerance == INT8_PER_POSITION_TOLERANCE
    assert (INT8_PER_POSITION_TOLERANCE.max_relative_error, INT8_PER_POSITION_TOLERANCE.min_top1_agreement) == (0.2, 0.9)
    on_calibration, seeded = verdict.cases
    x = np.load(calibration)
    assert on_calibration.top1_agreement == _per_pixel_agreement(model, fc56.module, x)
    # Good files measured 2.5e-2 to 8.9e-2 of the largest score and 96.7% to 97.3% of pixels agreeing.
    assert 0.9 <= on_calibration.top1_agreement < 1.0, on_calibration.describe()
    for case in verdict.cases:
        assert 1e-3 < case.relative_error < 0.1, case.describe()
    assert seeded.top1_agreement is None, "agreement is judged on the calibration inputs only"
    # Calibrated on inputs × 0.05: 0.78 to 0.93 of the largest score off on the spec's input scale.
    scaled = _segmentation_calibration(fc56, tmp_path, 0.05)
    _, verdict = deploy(fc56.model, fc56.module, fc56.spec, settle(fc56.spec, precision="int8", calibration=scaled),
                        SEGMENTATION_CASES)
    assert verdict is not None and not verdict.passed
    assert verdict.cases[-1].relative_error > 0.5 and not verdict.cases[-1].passed, verdict.cases[-1].describe()


# DenseNet-121 as a backbone with four named maps, two layers per block, 64×64: one named ONNX output per map.
BACKBONE_OUTPUTS = ("outputs=[{name: stem, at: stem.activation}, {name: c2, at: 'body[1].activation'}, "
                    "{name: c3, at: 'body[2]'}, {name: c5, at: head.activation}]")
BACKBONE = (BACKBONE_OUTPUTS, "input.height=64", "input.width=64",
            *(f"body[{index}].num_layers=2" for index in (0, 2, 4, 6)))
BACKBONE_CASES = (("batch 2", (2, 3, 64, 64)),)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Exported:
    return Exported(tmp_path_factory.mktemp("backbone"), SPECS / "densenet121.yaml", BACKBONE, verify=False)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_backbone_maps_are_converted_and_each_judged_on_its_own_scale(backbone, precision, tmp_path):
    calibration = None
    if precision == "int8":
        calibration = tmp_path / "calibration.npy"
        np.save(calibration, np.random.default_rng(7).standard_normal((16, 3, 64, 64)).astype(np.float32))
    deployment = settle(backbone.spec, precision=precision, calibration=calibration)
    model, verdict = deploy(backbone.model, backbone.module, backbone.spec, deployment, BACKBONE_CASES)
    assert verdict is not None and verdict.passed, [case.describe() for case in verdict.cases]
    assert [output.name for output in model.graph.output] == ["stem", "c2", "c3", "c5"]
    assert verdict.tolerance == (FP16_TOLERANCE if precision == "fp16" else INT8_REGRESSOR_TOLERANCE)
    x = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = [value.numpy() for value in backbone.module(x).values()]
    # The worst map relative to its own largest value, as check reports it (not to the largest of all maps).
    worst = max(float(np.abs(g - e).max() / np.abs(e).max()) for g, e in zip(got, expected))
    case = verdict.cases[-1]
    assert case.relative_error == pytest.approx(worst, rel=1e-6), case.describe()
    assert case.top1_agreement is None, "a backbone's maps are not class scores"
    bound = 2e-3 if precision == "fp16" else 0.1
    assert 1e-5 < case.relative_error < bound, case.describe()
