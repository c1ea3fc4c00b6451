"""The ONNX emitters: one per kind of part, every opset from 13 written exactly, and the graph
equal to the torch module over specs drawn from the whole vocabulary."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from torch import nn

import archspec
from archspec.exporters.emitters import EMITTERS, emit, emit_module, register
from archspec.exporters.graph import Graph
from archspec.exporters.onnx import DEFAULT_OPSET, MIN_OPSET, newest_opset
from archspec.exporters.verify import CPU, runs_opset
from archspec.format.parts import PARTS, StagePart
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error
from tests.test_family import _specs

pytestmark = pytest.mark.onnx

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
STAGE_TAGS = [tag for tag, kind in PARTS.items() if issubclass(kind, StagePart)]
OPSETS = range(MIN_OPSET, newest_opset() + 1)
RUNNABLE = [opset for opset in OPSETS if runs_opset(opset)]
# Relative to the largest output (tests.nontrivial.relative_error): fp32 sums in another order.
TOLERANCE = 1e-4


@pytest.mark.parametrize("tag", STAGE_TAGS)
def test_every_stage_kind_has_an_onnx_emitter(tag: str) -> None:
    assert tag in EMITTERS, f"no ONNX emitter registered for {tag} (archspec/exporters/emitters.py)"


def test_emitters_are_registered_only_for_known_tags() -> None:
    assert set(EMITTERS) == set(STAGE_TAGS)


def test_a_second_emitter_for_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="an ONNX emitter for 'transition' is already registered"):
        register("transition")(lambda *_: "")


def test_a_module_without_an_emitter_is_a_run_error() -> None:
    with pytest.raises(archspec.RunError, match=r"no ONNX emitter for the torch module features.x \(Tanh\)"):
        emit_module(Graph(DEFAULT_OPSET), "input", nn.Tanh(), "features.x", 2)


def _emitted(document: dict | str, opset: int, overrides: tuple[str, ...] = ()) -> tuple[nn.Module, onnx.ModelProto]:
    """The network with random state, and its graph with dynamic batch and spatial axes."""
    spec = archspec.load_spec(document, list(overrides))
    result = archspec.static_pass(spec)
    model = randomize_state(archspec.build(spec), seed=3).eval()
    spatial = [f"axis{index}" for index in range(len(result.input_shape) - 1)]
    graph = emit(result, model, opset=opset, input_name="input", input_dims=["batch", result.input_shape[0], *spatial],
                 outputs=[("out", ["batch", *result.out_shape])])
    return model, graph


def _error(model: nn.Module, graph: onnx.ModelProto, shape: tuple[int, ...]) -> float:
    session = ort.InferenceSession(graph.SerializeToString(), providers=[CPU])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    (actual,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    return relative_error(torch.from_numpy(actual), expected)


@pytest.fixture(scope="module")
def tutorial_weights(tmp_path_factory) -> Path:
    """The tutorial's seeded random norm statistics, affine values and biases: a fresh norm is an
    identity, under which a BatchNormalization emitter that returns its input would pass."""
    path = tmp_path_factory.mktemp("weights") / "tutorial.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(randomize_state(archspec.build(TUTORIAL), seed=3).state_dict(), path)
    return path


@pytest.mark.parametrize("opset", OPSETS)
def test_every_opset_is_written_exactly(tmp_path, tutorial_weights, opset: int) -> None:
    out = tmp_path / "tutorial.onnx"
    verify = opset in RUNNABLE
    if not verify:  # onnxruntime refuses opsets onnx has not released yet: refused unless unverified
        with pytest.raises(archspec.SpecError, match=rf"onnxruntime .* cannot run opset {opset}, .*"
                                                     rf"choose {MIN_OPSET} to {RUNNABLE[-1]}, or --no-verify"):
            archspec.export_onnx(TUTORIAL, out, opset=opset, provider="cpu")
        assert list(tmp_path.iterdir()) == []
    report = archspec.export_onnx(TUTORIAL, out, weights=tutorial_weights, opset=opset, provider="cpu",
                                  batch_size=2, verify=verify)
    model = onnx.load(str(out))
    assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", opset)]
    assert (report.opset, report.checker, report.exporter) == (opset, "passed", "archspec")
    assert {p.key: p.value for p in model.metadata_props}["archspec.opset"] == str(opset)
    if verify:  # compared with PyTorch on the random state loaded, not on a fresh module's identities
        assert report.verification.passed, report.verification.cases
        assert report.random_state is None, "the loaded weights hold no initial values"


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, newest_opset() + 1])
def test_an_opset_outside_the_range_is_refused(tmp_path, opset: int) -> None:
    with pytest.raises(archspec.SpecError) as caught:
        archspec.export_onnx(TUTORIAL, tmp_path / "x.onnx", opset=opset, provider="cpu")
    assert str(caught.value) == (f"--opset: opset {opset} is outside the opsets archspec writes: "
                                 f"{MIN_OPSET} to {newest_opset()} (onnx {onnx.__version__})")
    assert list(tmp_path.iterdir()) == []


# A feature-vector network with layer norm and GELU, and an image one with group norm and GELU:
# the ops that exist only at newer opsets (LayerNormalization 17, Gelu 20) and their expansions.
_TABULAR = {"archspec": 1, "name": "ln", "input": {"type": "tabular", "features": 7},
            "stem": {"type": "mlp_stem", "hidden": [16]},
            "defaults": {"growth_rate": 8, "norm": "layer_norm", "activation": "gelu", "bias": True},
            "body": [{"type": "dense_block", "num_layers": 2, "layer": "linear"}],
            "head": {"type": "regressor", "out_features": 2}}
_IMAGE = {"archspec": 1, "name": "gn", "input": {"type": "image", "channels": 2, "height": 20, "width": 18},
          "stem": {"type": "conv_stem", "out_channels": 8, "kernel_size": 3, "stride": 1, "padding": 1},
          "defaults": {"growth_rate": 4, "norm": {"type": "group_norm", "groups": 4}, "activation": "gelu"},
          "body": [{"type": "dense_block", "num_layers": 2}], "head": {"type": "classifier", "num_classes": 3}}


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, 16, 17, 19, 20, RUNNABLE[-1]}))
def test_newer_ops_only_where_the_opset_has_them(opset: int) -> None:
    model, graph = _emitted(_TABULAR, opset)
    ops = {node.op_type for node in graph.graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17), ops
    assert ("Gelu" in ops) == (opset >= 20), ops
    assert _error(model, graph, (3, 7)) <= TOLERANCE
    model, graph = _emitted(_IMAGE, opset)
    assert "GroupNormalization" not in {node.op_type for node in graph.graph.node}
    assert _error(model, graph, (2, 2, 15, 22)) <= TOLERANCE


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_specs(), opset=st.sampled_from(sorted({MIN_OPSET, 17, DEFAULT_OPSET, RUNNABLE[-1]})))
def test_the_graph_equals_the_module_over_the_vocabulary(document: dict, opset: int) -> None:
    try:
        model, graph = _emitted(document, opset)
    except archspec.SpecError as error:  # e.g. pools that shrink a small input below 1
        assert error.problems and error.path, error
        event("refused by the static pass")
        # Counted by hypothesis as an invalid example: too many fail its filter_too_much health check.
        assume(False)
    onnx.checker.check_model(graph, full_check=True)
    shape = archspec.static_pass(archspec.load_spec(document)).input_shape
    error = _error(model, graph, (2, *shape))
    assert error <= TOLERANCE, f"opset {opset}: max error {error:.3g} of the largest output"
