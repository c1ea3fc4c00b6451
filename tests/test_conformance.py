"""One conformance test per registered kind of part: a minimal spec that uses it goes through
validate, build, the static-pass-equals-module check, export and verification, so a kind
cannot be half-registered (a home without a factory, an emitter, or an entry here).

Each spec is tiny (1×32×32 images, a few channels): the whole file runs in seconds.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner

import archspec
import archspec.format.parts as parts_package
from archspec.builder import FACTORIES
from archspec.cli import main
from archspec.exporters.emitters import EMITTERS
from archspec.format.parts import PARTS, ROLES, InputPart, StagePart
from tests.nontrivial import randomize_state, relative_error
from tests.test_builder import stage_outputs
from tests.threads import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)

_IMAGE = {"type": "image", "channels": 1, "height": 32, "width": 32}
_CONV_STEM = {"type": "conv_stem", "out_channels": 8, "kernel_size": 3, "stride": 1, "padding": 1, "pool": "none"}
_CONV_BODY = [
    {"type": "dense_block", "num_layers": 2},
    {"type": "transition", "compression": 0.5},
    {"type": "dense_block", "num_layers": 1},
]
_CLASSIFIER = {"type": "classifier", "num_classes": 3}


def _spec(**parts: Any) -> dict[str, Any]:
    """A small image spec (1×32×32, stem of 8 channels, growth 4), with ``parts`` replaced."""
    spec = {
        "archspec": 1,
        "name": "conformance",
        "input": _IMAGE,
        "stem": _CONV_STEM,
        "defaults": {"growth_rate": 4, "bn_size": 2},
        "body": _CONV_BODY,
        "head": _CLASSIFIER,
    }
    return {**spec, **parts}


# The minimal spec for every tag of archspec.format.parts.PARTS. A tag registered there
# without an entry here fails test_every_kind_has_a_conformance_spec and its own case below.
MINIMAL: dict[str, dict[str, Any]] = {
    "image": _spec(),
    "signal": _spec(input={"type": "signal", "channels": 2, "length": 32}),
    "volume": _spec(input={"type": "volume", "channels": 1, "depth": 8, "height": 8, "width": 8}),
    "tabular": _spec(
        input={"type": "tabular", "features": 6},
        stem={"type": "mlp_stem", "hidden": [8]},
        body=[{"type": "dense_block", "layer": "linear", "num_layers": 2},
              {"type": "transition", "layer": "linear", "pool": "none", "compression": 0.5},
              {"type": "dense_block", "layer": "linear", "num_layers": 1}],
    ),
    "conv_stem": _spec(),
    "deep_stem": _spec(stem={"type": "deep_stem", "widths": [4, 8], "stride": 1, "pool": "none"}),
    "mlp_stem": _spec(
        input={"type": "tabular", "features": 6},
        stem={"type": "mlp_stem", "hidden": [8, 12]},
        body=[{"type": "dense_block", "layer": "linear", "num_layers": 2}],
        head={"type": "regressor", "out_features": 2},
    ),
    "dense_block": _spec(body=[{"type": "dense_block", "num_layers": 2}]),
    "transition": _spec(),
    "classifier": _spec(),
    "regressor": _spec(head={"type": "regressor", "out_features": 2}),
    "norm": _spec(body=[*_CONV_BODY, {"type": "norm", "activation": "relu"}]),
    "features": _spec(head={"type": "features"}),
    "transition_up": _spec(body=[*_CONV_BODY, {"type": "transition_up"}]),
    "concat": _spec(body=[*_CONV_BODY, {"type": "transition_up", "mode": "nearest"},
                          {"type": "concat", "skip": "body[0]"}]),
    "unet_block": _spec(body=[*_CONV_BODY, {"type": "unet_block", "skip": "body[1].activation", "out_channels": 4},
                              {"type": "unet_block", "out_channels": 4, "mode": "linear"}]),
    "segmentation": _spec(
        body=[_CONV_BODY[0], _CONV_BODY[1], {"type": "dense_block", "num_layers": 1, "output": "new"},
              {"type": "transition_up"}, {"type": "concat", "skip": "body[0]", "fit": "crop"},
              {"type": "dense_block", "num_layers": 1}],
        head={"type": "segmentation", "num_classes": 3, "kernel_size": 3},
    ),
}


def test_every_kind_has_a_conformance_spec() -> None:
    assert sorted(set(PARTS) - set(MINIMAL)) == [], "registered in PARTS without a minimal spec here"
    assert sorted(set(MINIMAL) - set(PARTS)) == [], "a minimal spec here for a tag PARTS no longer has"


def test_every_kind_written_in_the_homes_is_registered() -> None:
    # A home whose class never reached ROLES is as half-registered as one without a factory.
    written = set()
    for module_info in pkgutil.iter_modules(parts_package.__path__):
        module = importlib.import_module(f"{parts_package.__name__}.{module_info.name}")
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if issubclass(kind, (InputPart, StagePart)) and "type" in kind.model_fields:
                written.add(kind)
    registered = {kind for kinds in ROLES.values() for kind in kinds}
    assert {kind.__name__ for kind in written - registered} == set(), "kinds missing from ROLES"
    assert set(PARTS.values()) == registered


def _uses(spec: archspec.Spec, tag: str) -> bool:
    return spec.input.type == tag or any(stage.kind == tag for stage in archspec.static_pass(spec).stages)


def _assert_static_pass_equals_module(spec: archspec.Spec, model: torch.nn.Module) -> None:
    result = archspec.static_pass(spec)
    modules = dict(model.named_modules())
    assert list(model.stage_modules) == [stage.path for stage in result.stages]
    shapes = stage_outputs(model, torch.randn(1, *result.input_shape))
    for stage in result.stages:
        params = sum(p.numel() for name in model.stage_modules[stage.path] for p in modules[name].parameters())
        assert params == stage.params, f"{stage.path}: module {params} parameters vs static {stage.params}"
        assert shapes[stage.path] == stage.out_shape, f"{stage.path}: module {shapes[stage.path]} vs static"
    assert sum(p.numel() for p in model.parameters()) == result.params


@pytest.mark.onnx
@pytest.mark.parametrize("tag", sorted(PARTS))
def test_every_kind_validates_builds_and_exports(tag: str, tmp_path: Path) -> None:
    assert tag in MINIMAL, f"{tag} is registered in PARTS but has no minimal spec in tests/test_conformance.py"
    if issubclass(PARTS[tag], StagePart):
        assert tag in FACTORIES, f"{tag} has no torch factory (archspec/builder.py)"
        assert tag in EMITTERS, f"{tag} has no ONNX emitter (archspec/exporters/emitters.py)"

    # Validate, from a file as a user writes it, through the API and the command.
    path = tmp_path / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(MINIMAL[tag], sort_keys=False), encoding="utf-8")
    spec = archspec.load_spec(path)
    assert _uses(spec, tag), f"the minimal spec for {tag} does not use it"
    result = CliRunner().invoke(main, ["validate", str(path), "--verbose"])
    assert result.exit_code == 0, result.output
    fits = archspec.fit(spec, budget=2**30)
    assert all(mode.estimate.total(1) > 0 for mode in fits), "the memory model counts nothing"
    assert archspec.diagram(spec, tmp_path / f"{tag}.svg").stat().st_size > 0

    # Build, and hold the module to the static pass stage by stage.
    model = randomize_state(archspec.build(spec), seed=3).eval()
    _assert_static_pass_equals_module(spec, model)

    # Export with random norms and biases (a fresh norm is an identity and hides its nodes),
    # then run the file independently of the product's own verification.
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / f"{tag}.onnx"
    report = archspec.export_onnx(spec, out, weights=weights, batch_size=2)
    assert report.verification.cases, "verification ran no case"
    x = torch.randn(2, *archspec.static_pass(spec).input_shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert float(expected.abs().max()) > 0, "a zero output proves nothing"
    error = relative_error(torch.from_numpy(np.asarray(got)), expected)
    assert error <= 1e-5, f"{tag}: ONNX output {error:.2e} of the largest away from PyTorch's"
