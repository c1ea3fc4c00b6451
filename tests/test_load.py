"""The safe reader: positions, aliases, JSON, limits; paths; merging for ``extends``."""

from __future__ import annotations

from pathlib import Path

import pytest

import archspec
from archspec.format.extends import merge
from archspec.format.paths import dotted, parse_dotted
from archspec.format.yaml_source import MAX_DEPTH, MAX_NODES, Position, parse_text
from tests.conftest import ROOT


def test_positions_of_keys_and_values() -> None:
    doc = parse_text("a: 1\nb:\n  - {c: x}\n  - [1, 2]\n", "f.yaml")
    assert doc.data == {"a": 1, "b": [{"c": "x"}, [1, 2]]}
    assert doc.values[("a",)] == Position("f.yaml", 1, 4)
    assert doc.keys[("b", 0, "c")] == Position("f.yaml", 3, 6)
    assert doc.values[("b", 0, "c")] == Position("f.yaml", 3, 9)
    assert doc.values[("b", 1, 1)] == Position("f.yaml", 4, 9)
    # a path never written falls back to its nearest written ancestor
    assert doc.position(("b", 0, "missing")) == Position("f.yaml", 3, 5)


def test_json_positions_and_numbers() -> None:
    doc = parse_text('{\n  "x": 1e3,\n  "y": [true, null, "s", -0.5]\n}\n', "f.json")
    assert doc.data == {"x": 1000.0, "y": [True, None, "s", -0.5]}
    assert doc.values[("y", 3)] == Position("f.json", 3, 26)


def test_aliases_are_copies_located_at_the_alias() -> None:
    doc = parse_text("a: &p {n: 1}\nb: *p\n", "f.yaml")
    assert doc.data == {"a": {"n": 1}, "b": {"n": 1}}
    assert doc.data["a"] is not doc.data["b"]
    assert doc.values[("b", "n")] == Position("f.yaml", 2, 4)


def test_node_and_depth_limits_are_exact() -> None:
    parse_text("[" + ", ".join(["1"] * (MAX_NODES - 1)) + "]")  # the list itself is one value
    with pytest.raises(archspec.SpecError) as caught:
        parse_text("[" + ", ".join(["1"] * MAX_NODES) + "]")
    assert caught.value.message == "more than 100,000 values (after expanding aliases); refusing to go on"
    parse_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(archspec.SpecError) as caught:
        parse_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert (caught.value.line, caught.value.column) == (1, MAX_DEPTH + 1)


def test_dates_stay_text_and_plain_tags_are_allowed() -> None:
    doc = parse_text("d: 2024-01-02\nn: !!str 5\nf: !!float 1\n")
    assert doc.data == {"d": "2024-01-02", "n": "5", "f": 1.0}


@pytest.mark.parametrize(
    ("text", "loc"),
    [("head.num_classes", ("head", "num_classes")), ("body[2].num_layers", ("body", 2, "num_layers")),
     ("body[0]", ("body", 0)), ("a..b", None), ("[1]", None), ("a.[1]", None), ("a b", None), ("", None)],
)
def test_dotted_paths_round_trip(text: str, loc: tuple | None) -> None:
    assert parse_dotted(text) == loc
    if loc is not None:
        assert dotted(loc) == text


def test_merge_keeps_positions_of_whoever_wrote_the_value() -> None:
    base = parse_text("stem: {k: 7, s: 2}\nbody: [1, 2, 3]\n", "base.yaml")
    over = parse_text("stem: {s: 1}\nbody: [9]\n", "over.yaml")
    merged = merge(base, over)
    assert merged.data == {"stem": {"k": 7, "s": 1}, "body": [9]}
    assert merged.values[("stem", "k")].file == "base.yaml"
    assert merged.values[("stem", "s")].file == "over.yaml"
    assert ("body", 2) not in merged.values  # the base's list is gone entirely


def test_mapping_source_is_not_modified() -> None:
    data = archspec.load_spec(ROOT / "specs" / "tutorial.yaml").model_dump(mode="json")
    before = repr(data)
    spec = archspec.load_spec(data, ["head.num_classes=3"])
    assert spec.head.num_classes == 3 and repr(data) == before


def test_yml_and_json_files(tmp_path: Path) -> None:
    data = archspec.load_spec(ROOT / "specs" / "mlp_tabular.yaml").model_dump_json()
    (tmp_path / "m.json").write_text(data)
    (tmp_path / "m.yml").write_text(data)
    assert archspec.load_spec(tmp_path / "m.json") == archspec.load_spec(tmp_path / "m.yml")


def test_thousands_of_errors_are_capped(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    spec.write_text("archspec: 1\nname: x\nbody: [" + ", ".join(["1"] * 200) + "]\n")
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(spec)
    problems = caught.value.problems
    assert len(problems) == 51
    # 200 bad body items + missing input, stem and head = 203 problems; 50 shown: the three
    # missing fields (at the top mapping, 1:1) and body[0..46]; body[47] sits at column 8 + 47·3
    assert str(problems[-1]) == f"{spec}:3:149: body[47]: 153 more problems from here on, not shown"


def test_one_override_as_a_string_is_one_assignment() -> None:
    # Once read character by character: "h", "e", "a"... each refused as an override without "=".
    tutorial = ROOT / "specs" / "tutorial.yaml"
    spec = archspec.load_spec(tutorial, overrides="head.num_classes=3")
    assert spec.head.num_classes == 3
    assert archspec.static_pass(spec).out_shape == (3,)
    assert archspec.build(tutorial, overrides="head.num_classes=3").classifier.out_features == 3
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(tutorial, overrides="head.num_classes=0")
    assert len(caught.value.problems) == 1 and caught.value.path == "head.num_classes", caught.value


def test_every_group_count_that_does_not_divide_is_reported_with_counts_that_do() -> None:
    # The tutorial's norms see 64, 192, 96, 224, 112, 32 (the growth), 240, 120 and 248 channels:
    # 7 divides only 224 and 112; 8 divides all (so does 4, and 1, 2; 16 fails on 120 and 248).
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(ROOT / "specs" / "tutorial.yaml", ["defaults.norm={type: group_norm, groups: 7}"])
    assert [f"{problem.path}: {problem.message}" for problem in caught.value.problems] == [
        "stem: group_norm with 7 groups cannot split 64 channels",
        "body[0]: group_norm with 7 groups cannot split 64 or 32 channels",  # a block's input and growth
        "body[1]: group_norm with 7 groups cannot split 192 channels",
        "body[2]: group_norm with 7 groups cannot split 96 or 32 channels",
        "body[4]: group_norm with 7 groups cannot split 32 channels",
        "body[5]: group_norm with 7 groups cannot split 240 channels",
        "body[6]: group_norm with 7 groups cannot split 120 or 32 channels",
        "head: group_norm with 7 groups cannot split 248 channels; "
        "group counts that divide every width here: 4 or 8",
    ]
    assert [problem.line for problem in caught.value.problems] == [11, 22, 23, 24, 26, 27, 28, 29]
    archspec.load_spec(ROOT / "specs" / "tutorial.yaml", ["defaults.norm={type: group_norm, groups: 8}"])
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(ROOT / "specs" / "tutorial.yaml", ["defaults.norm={type: group_norm, groups: 16}"])
    assert caught.value.problems[-1].message.endswith("group counts that divide every width here: 8"), caught.value


def test_a_group_norm_check_sees_every_width_it_is_given() -> None:
    from archspec.format.parts.vocabulary import GroupNorm, check_norm

    with pytest.raises(archspec.SpecError, match=r"^body\[2\]: group_norm with 8 groups cannot split 36 or 68 channels$"):
        check_norm(GroupNorm(type="group_norm", groups=8), (64, 36, 68, 36), (64, 4, 4), "body[2]")
    check_norm(GroupNorm(type="group_norm", groups=4), (64, 36, 68), (64, 4, 4), "body[2]")
