"""Property: a mutated reference spec either builds exactly what the static pass says, or is refused.

Refusal must be a ``SpecError`` with a location; nothing else may escape. Set
``ARCHSPEC_FUZZ_EXAMPLES`` for a long run (CI runs the default few hundred).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import archspec
from tests.conftest import ROOT

EXAMPLES = int(os.environ.get("ARCHSPEC_FUZZ_EXAMPLES", "150"))
BASES = {
    name: yaml.safe_load((ROOT / "specs" / f"{name}.yaml").read_text())
    for name in ("tutorial", "mlp_tabular")
}
# The resource guard's limits for this test: anything larger would be slow to build here.
MAX_PARAMS = 4_000_000
MAX_MEMORY = 1 << 30

# Mostly plausible values, so that a fair share of mutants validate and get built.
plausible = st.one_of(st.integers(min_value=1, max_value=48), st.sampled_from([0.25, 0.5, 1.0]))
scalars = st.one_of(
    plausible,
    plausible,
    plausible,
    st.integers(min_value=-3, max_value=70),
    st.sampled_from([0, 1, 2**40, 0.5, 1.5, -0.5, math.nan, math.inf, None, True, False]),
    st.sampled_from(["", "relu", "none", "avg", "max", "linear", "conv", "dense_block",
                     "transition", "image", "tabular", "batch_norm", "classifier", "regressor"]),
    st.text(max_size=8),
)
keys = st.sampled_from(["num_layers", "growth_rate", "bn_size", "compression", "pool", "layer",
                        "type", "out_channels", "stride", "memory_efficient", "drop_rate",
                        "bias", "hidden", "momery_efficient", "num_classes", "extra"])


def _containers(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path in the document that leads to a mapping or a list."""
    found = [path]
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, (dict, list)):
            found.extend(_containers(value, (*path, key)))
    return found


def _at(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict:
    document = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        # The document root is left alone: its version and tags are tested elsewhere.
        target = _at(document, draw(st.sampled_from(_containers(document)[1:])))
        slots = list(target) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["change", "delete", "insert"]))
        if action == "insert" or not slots:
            if isinstance(target, dict):
                target[draw(keys)] = draw(scalars)
            else:
                target.insert(draw(st.integers(0, len(target))), copy.deepcopy(draw(st.sampled_from(target or [{}]))))
        elif action == "delete":
            del target[draw(st.sampled_from(slots))]
        else:
            # Changing a `type` tag is nearly always refused; test that rarely, build more.
            changeable = [slot for slot in slots if slot != "type"] or slots
            target[draw(st.sampled_from(changeable))] = draw(scalars)
    return document


def _smallest_input(spec: archspec.Spec) -> archspec.Spec:
    """The spec with the smallest square image it accepts (tabular specs unchanged)."""
    if spec.input.type != "image":
        return spec
    for side in range(1, min(spec.input.height, 256) + 1):
        try:
            return archspec.load_spec(spec.model_dump(), [f"input.height={side}", f"input.width={side}"])
        except archspec.SpecError:
            continue
    return spec


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_spec_builds_exactly_or_is_refused_with_a_location(document: dict) -> None:
    try:
        spec = archspec.load_spec(document)
    except archspec.SpecError as error:
        assert error.path or error.line is not None, f"no location in {error}"
        event("refused")
        return
    spec = _smallest_input(spec)
    result = archspec.static_pass(spec)
    try:
        model = archspec.build(spec, batch_size=2, max_params=MAX_PARAMS, max_memory=MAX_MEMORY)
    except archspec.SpecError as error:
        assert "raise the limit with --max-" in error.message, error.message
        event("refused by the resource guard")
        return
    event("built")
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == result.params
    x = torch.randn(2, *result.input_shape)
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, *result.out_shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BASES))
def test_unmutated_bases_are_valid(name: str) -> None:
    assert archspec.load_spec(BASES[name]).name == name
