"""One home per kind of part: every tag answers every facet of its role, and nothing
outside the homes and registries dispatches on a part's kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import archspec
from archspec.builder import FACTORIES
from archspec.format.parts import PARTS, ROLES, InputPart, StagePart
from tests.conftest import ROOT

SPEC_KINDS = [(tag, kind) for tag, kind in PARTS.items()]


@pytest.mark.parametrize(("tag", "kind"), SPEC_KINDS, ids=[tag for tag, _ in SPEC_KINDS])
def test_every_kind_defines_every_facet_of_its_role(tag: str, kind: type) -> None:
    role = InputPart if issubclass(kind, InputPart) else StagePart
    for facet in role.FACETS:
        assert getattr(kind, facet) is not getattr(role, facet), f"{tag} does not define {facet}"
    assert kind.__doc__ and kind.__doc__ != role.__doc__, f"{tag} has no docstring for the reference"
    missing = [name for name, field in kind.model_fields.items() if not field.description]
    assert not missing, f"{tag}: fields without a docstring: {missing}"


@pytest.mark.parametrize("tag", [tag for tag, kind in PARTS.items() if issubclass(kind, StagePart)])
def test_every_stage_kind_has_a_torch_factory_and_a_reference_section(tag: str) -> None:
    assert tag in FACTORIES, f"no torch factory registered for {tag}"
    reference = (ROOT / "docs" / "spec-reference.md").read_text(encoding="utf-8")
    assert f"### {PARTS[tag].__name__}" in reference, f"{tag} is missing from docs/spec-reference.md"


def test_factories_are_registered_only_for_known_tags() -> None:
    assert set(FACTORIES) == {tag for tag, kind in PARTS.items() if issubclass(kind, StagePart)}


def test_roles_hold_what_the_spec_fields_accept() -> None:
    fields = archspec.Spec.model_fields
    for role in ROLES:
        assert role in fields, role


# Dispatch on a part's kind (isinstance on a part class, comparing its tag) belongs in the
# part homes (archspec/format/parts/) and the registries keyed by tag. Issue 11 counted 36
# such dispatches elsewhere before the refactor.
_DISPATCH = re.compile(
    r"isinstance\([^)]*\b(Input|ImageInput|TabularInput|ConvStem|MLPStem|DenseBlock|Transition|"
    r"ClassifierHead|RegressorHead)\b|\.type\s*[!=]=|\.kind\s*[!=]=|\[\"type\"\]\s*[!=]="
)


# from_weights.py runs the other way, from a checkpoint's tensors to a spec: choosing which
# tag to write is its job.
_WRITES_TAGS = ("from_weights.py",)


def test_no_part_kind_dispatch_outside_the_homes() -> None:
    package = ROOT / "archspec"
    homes = package / "format" / "parts"
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if homes not in path.parents and path.name not in _WRITES_TAGS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _DISPATCH.search(line)
    ]
    assert found == []


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
