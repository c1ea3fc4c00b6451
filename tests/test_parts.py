"""One home per kind of part: each is documented, registered once, offered by the schema in its
role, and the static pass it drives is what it says. Every kind running end to end (validate,
build, export) is tests/test_conformance.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archspec
from archspec.builder import FACTORIES
from archspec.exporters.emitters import EMITTERS
from archspec.format.parts import PARTS, ROLES, StagePart
from archspec.format.parts import tag as tag_of
from tests.conftest import ROOT


@pytest.mark.parametrize("tag", sorted(PARTS))
def test_every_kind_is_documented_for_the_reference(tag: str) -> None:
    # The spec reference (docs/spec-reference.md) is generated from these docstrings.
    kind = PARTS[tag]
    assert kind.__doc__ and all(kind.__doc__ != base.__doc__ for base in kind.__mro__[1:]), \
        f"{tag} has no docstring of its own"
    missing = [name for name, field in kind.model_fields.items() if not field.description]
    assert not missing, f"{tag}: fields without a docstring: {missing}"
    reference = (ROOT / "docs" / "spec-reference.md").read_text(encoding="utf-8")
    assert f"### {kind.__name__}" in reference, f"{tag} is missing from docs/spec-reference.md"


def test_factories_and_emitters_are_registered_only_for_known_tags() -> None:
    # Every stage kind having both is tests/test_conformance.py's; a stray registration is here.
    stage_tags = {tag for tag, kind in PARTS.items() if issubclass(kind, StagePart)}
    assert set(FACTORIES) == stage_tags
    assert set(EMITTERS) == stage_tags


def test_each_spec_field_accepts_exactly_its_role() -> None:
    # The tags the schema offers for input, stem, body and head are those ROLES lists.
    schema = json.loads(archspec.json_schema_text())
    definitions = schema["$defs"]

    def tags(node: dict) -> set[str]:
        if "$ref" in node:
            return tags(definitions[node["$ref"].rsplit("/", 1)[1]])
        if "items" in node:
            return tags(node["items"])
        if "oneOf" in node or "anyOf" in node:
            return set().union(*(tags(option) for option in node.get("oneOf", node.get("anyOf"))))
        kind = node.get("properties", {}).get("type", {})
        return {kind["const"]} if "const" in kind else set(kind.get("enum", ()))

    for role, kinds in ROLES.items():
        assert tags(schema["properties"][role]) == {tag_of(kind) for kind in kinds}, role


def test_a_spec_object_takes_overrides_exactly_as_a_path() -> None:
    # Issue 11: overriding `defaults.growth_rate` on a Spec object once built 758,226
    # parameters (the tutorial's), ignoring the override; with the path it builds 236,234.
    tutorial = ROOT / "specs" / "tutorial.yaml"
    overrides = ("defaults.growth_rate=16",)
    from_path = archspec.build(tutorial, overrides=overrides)
    from_spec = archspec.build(archspec.load_spec(tutorial), overrides=overrides)
    counts = [sum(p.numel() for p in model.parameters()) for model in (from_path, from_spec)]
    assert counts == [236_234, 236_234]


def test_a_validated_spec_is_what_the_user_wrote() -> None:
    spec = archspec.load_spec(ROOT / "specs" / "tutorial.yaml")
    written = spec.model_dump(mode="json", exclude_unset=True)
    assert "growth_rate" not in written["body"][0], "defaults are not written into the blocks"
    assert spec.body[0].growth_rate == "inherit"
    assert archspec.static_pass(spec).stages[1].part.growth_rate == 32  # resolved when read


def test_summary_applies_the_resource_guard() -> None:
    with pytest.raises(archspec.SpecError) as caught:
        archspec.summary(ROOT / "specs" / "tutorial.yaml", overrides=("defaults.growth_rate=100000",))
    assert "parameters exceed the limit of 2,000,000,000" in caught.value.message


def test_summary_reports_the_spec_it_was_given() -> None:
    table = archspec.summary(ROOT / "specs" / "tutorial.yaml")
    assert "Total params: 758,226" in table  # seed 000's tutorial DenseNet


def test_static_pass_is_closed_form_in_the_layer_count(tmp_path: Path) -> None:
    # 1,000 layers of growth 1, no bottleneck, biased 3×3 convolutions (the tutorial's defaults):
    # a layer reading w channels has a BatchNorm (2w) and a conv (9w + 1). Summed layer by layer
    # here: 11·(1000·64 + 1000·999/2) + 1000 = 6,199,500.
    expected = sum(2 * width + 9 * width + 1 for width in range(64, 64 + 1000))
    spec = archspec.load_spec(ROOT / "specs" / "tutorial.yaml",
                              ["body[0].num_layers=1000", "defaults.growth_rate=1"])
    assert archspec.static_pass(spec).stages[1].params == expected == 6_199_500
