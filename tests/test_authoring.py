"""Authoring: all errors at once with positions, suggestions, extends, --set, --print-spec, --verbose."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.format.load import load_document
from archspec.format.shapes import static_pass
from tests.conftest import ROOT

TUTORIAL = ROOT / "specs" / "tutorial.yaml"


def _validate(*args: str) -> tuple[int, list[str], list[str]]:
    result = CliRunner().invoke(main, ["validate", *args])
    return result.exit_code, result.stdout.splitlines(), result.stderr.splitlines()


def test_every_error_at_once_in_file_order(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "archspec: 1\n"
        "name: bad\n"
        "input: {type: image, channels: 3, height: 64, width: 64}\n"
        "stem: {type: conv_stem, out_channels: -64}\n"
        "defaults: {growth_rate: 32, momery_efficient: true}\n"
        "body:\n"
        "  - {type: dense_blok, num_layers: 6}\n"
        "  - {type: transition, compression: 1.5}\n"
        "  - type: dense_block\n"
        "    num_layers: '12'\n"
        "head: {type: classifier}\n",
        encoding="utf-8",
    )
    code, _, errors = _validate(str(spec))
    assert code == 2
    assert errors == [
        f"{spec}:4:39: stem.out_channels: Input should be greater than 0 (got -64)",
        f"{spec}:5:29: defaults.momery_efficient: unknown field 'momery_efficient'; "
        "did you mean 'memory_efficient'?",
        f"{spec}:7:12: body[0].type: unknown type 'dense_blok'; did you mean 'dense_block'?",
        f"{spec}:8:37: body[1].compression: Input should be less than or equal to 1 (got 1.5)",
        f"{spec}:10:17: body[2].num_layers: Input should be a valid integer (got '12')",
        f"{spec}:11:7: head.num_classes: required field is missing",
    ]


def test_union_error_names_only_the_selected_member(tmp_path: Path) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text(TUTORIAL.read_text().replace("{type: transition, compression: 0.5, bias: true}",
                                                 "{type: transition, growth_rate: 8}", 1))
    code, _, errors = _validate(str(spec))
    # Only Transition's fields are offered, and the tag never appears in the path.
    # Transition has a drop_rate and no growth_rate: the suggestion comes from its fields only.
    assert errors == [f"{spec}:23:24: body[1].growth_rate: unknown field 'growth_rate'; did you mean 'drop_rate'?"]


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {TUTORIAL}\nstem: {{out_channels: 32}}\n"
                     "body: [{type: dense_block, num_layers: 1}]\n")
    spec = archspec.load_spec(child)
    assert spec.stem.out_channels == 32 and spec.stem.bias is True  # bias: true kept from the base
    assert spec.stem.kernel_size == 7
    (block,) = (stage.part for stage in static_pass(spec).stages if stage.kind == "dense_block")
    assert len(spec.body) == 1 and block.growth_rate == 32  # inherited from the base's defaults


def test_extends_chain_and_inherited_error_points_at_base(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TUTORIAL.read_text().replace("num_classes: 10", "num_classes: 0"))
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\ndescription: third in the chain\n")
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(tmp_path / "c.yaml")
    assert str(caught.value) == f"{tmp_path}/a.yaml:29:39: head.num_classes: Input should be greater than 0 (got 0)"
    doc = load_document(tmp_path / "c.yaml", ["head.num_classes=7"])
    assert doc.data["name"] == "b" and doc.data["description"] == "third in the chain"
    assert archspec.load_spec(tmp_path / "c.yaml", ["head.num_classes=7"]).head.num_classes == 7


@pytest.mark.parametrize(
    ("name", "params"),
    # torchvision.models.densenet161/169/201 parameter counts
    [("densenet161", 28_681_000), ("densenet169", 14_149_480), ("densenet201", 20_013_928)],
)
def test_short_densenet_specs_keep_exact_counts(name: str, params: int) -> None:
    path = ROOT / "specs" / f"{name}.yaml"
    assert "extends: densenet121.yaml" in path.read_text()
    assert static_pass(archspec.load_spec(path)).params == params


def test_override_examples() -> None:
    spec = archspec.load_spec(
        ROOT / "specs" / "densenet121.yaml",
        ["head.num_classes=10", "body[2].num_layers=32", "defaults.memory_efficient=true"],
    )
    assert spec.head.num_classes == 10 and spec.body[2].num_layers == 32
    blocks = [stage.part for stage in static_pass(spec).stages if stage.kind == "dense_block"]
    assert len(blocks) == 4 and all(block.memory_efficient for block in blocks)
    # 7,978,856 − 1000·1025 + 10·1025 (torchvision densenet121 with a 10-class classifier)
    assert static_pass(archspec.load_spec(ROOT / "specs" / "densenet121.yaml",
                                          ["head.num_classes=10"])).params == 6_964_106


def test_override_errors_name_the_override() -> None:
    code, _, errors = _validate(str(TUTORIAL), "--set", "body[9].num_layers=3")
    assert code == 2
    assert errors == [f"{TUTORIAL}: body[9]: no such list item (the list has 7) (set by --set body[9].num_layers=3)"]
    code, _, errors = _validate(str(TUTORIAL), "--set", "head.num_classes=-1")
    assert errors == [f"{TUTORIAL}: head.num_classes: Input should be greater than 0 (got -1) "
                      "(set by --set head.num_classes=-1)"]
    code, _, errors = _validate(str(TUTORIAL), "--set", "head.num_classes=!!python/name:os.system")
    assert errors == [f"{TUTORIAL}: head.num_classes: tag !!python/name:os.system is not allowed: "
                      "a spec holds plain data only (set by --set head.num_classes=!!python/name:os.system)"]



def test_an_override_that_creates_a_field_is_blamed_on_the_option() -> None:
    # The mapping `nonexistent` exists only because the override made it: no line of the spec wrote it.
    code, _, errors = _validate(str(TUTORIAL), "--set", "nonexistent.x=1")
    assert code == 2
    assert errors == [f"{TUTORIAL}: nonexistent: unknown field 'nonexistent'; expected one of: archspec, body, "
                      "defaults, description, head, input, name, outputs, preprocess, stem "
                      "(set by --set nonexistent.x=1)"]


def test_an_override_with_control_characters_is_one_escaped_line() -> None:
    code, _, errors = _validate(str(TUTORIAL), "--set", "head.num_classes=1\nx.yaml: ok\x1b[2J")
    assert code == 2
    assert errors == [f"{TUTORIAL}: head.num_classes: character U+001B is not allowed in a spec (control "
                      "characters are not allowed) (set by --set head.num_classes=1\\nx.yaml: ok\\x1b[2J)"]
    long_index = "body[" + "9" * 5000 + "].num_layers=1"  # past Python's 4,300-digit int limit
    code, _, errors = _validate(str(TUTORIAL), "--set", long_index)
    assert code == 2
    assert errors == [f"{TUTORIAL}: PATH of 5,017 characters; at most 200 (set by --set {long_index[:79]}…)"]


def test_extends_chain_positions_come_from_the_file_that_last_wrote_them(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("stem: {type: conv_stem, out_channels: 8}\nbody: [{num_layers: 1}, {x: 2}]\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nbody: [{num_layers: 3}]\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\nstem: {out_channels: 16}\n")
    document = load_document(tmp_path / "c.yaml")
    assert document.data == {"stem": {"type": "conv_stem", "out_channels": 16}, "body": [{"num_layers": 3}]}
    where = {loc: (Path(p.file).name, p.line, p.column) for loc, p in document.values.items()}
    assert where == {
        (): ("c.yaml", 1, 1),  # the top file's mapping
        ("stem",): ("c.yaml", 2, 7),
        ("stem", "out_channels"): ("c.yaml", 2, 22),
        ("stem", "type"): ("a.yaml", 1, 14),
        ("body",): ("b.yaml", 2, 7),
        ("body", 0): ("b.yaml", 2, 8),
        ("body", 0, "num_layers"): ("b.yaml", 2, 21),  # a.yaml's body and its item [1] are gone
    }


def test_build_print_spec_round_trips() -> None:
    result = CliRunner().invoke(main, ["build", str(ROOT / "specs" / "densenet169.yaml"), "--print-spec",
                                       "--set", "head.num_classes=10"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)  # stdout holds the spec and nothing else
    assert data["stem"]["out_channels"] == 64 and data["body"][4]["num_layers"] == 32
    assert data["body"][0]["growth_rate"] == 32  # defaults resolved into each block
    printed = archspec.static_pass(archspec.load_spec(data))
    # torchvision densenet169 (14,149,480) with 10 instead of 1000 classes: − 990·1665
    assert printed.params == 12_501_130
    assert printed == archspec.static_pass(
        archspec.load_spec(ROOT / "specs" / "densenet169.yaml", ["head.num_classes=10"]))


def test_validate_verbose_table() -> None:
    code, out, _ = _validate("--verbose", str(TUTORIAL))
    assert code == 0
    # stage shapes and running total as printed by the D2L tutorial (seed 000/003)
    assert out == [
        "part     type         output          params    total",
        "input                 (1, 96, 96)",
        "stem     conv_stem    (64, 24, 24)     3,328    3,328",
        "body[0]  dense_block  (192, 24, 24)  130,048  133,376",
        "body[1]  transition   (96, 12, 12)    18,912  152,288",
        "body[2]  dense_block  (224, 12, 12)  167,168  319,456",
        "body[3]  transition   (112, 6, 6)     25,648  345,104",
        "body[4]  dense_block  (240, 6, 6)    185,728  530,832",
        "body[5]  transition   (120, 3, 3)     29,400  560,232",
        "body[6]  dense_block  (248, 3, 3)    195,008  755,240",
        "head     classifier   (10)             2,986  758,226",
        f"{TUTORIAL}: ok (tutorial, 758,226 parameters, output (10))",
    ]


def test_every_spec_declares_the_schema() -> None:
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../docs/archspec.schema.json", path.name
