"""The JSON Schema: committed and fresh, accepts every spec, and agrees with pydantic."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from archspec.format.json_schema import json_schema
from archspec.format.load import load_document
from archspec.format.schema import Spec
from archspec.format.yaml_source import read_document
from tests import bounded
from tests.conftest import ROOT, SPEC_FILES, run_cli

VALIDATOR = jsonschema.Draft202012Validator(json_schema())
TUTORIAL = load_document(ROOT / "specs" / "tutorial.yaml").data
MLP = load_document(ROOT / "specs" / "mlp_tabular.yaml").data


def _edit(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()

# Single-field mistakes both validators can see. Cross-field rules are left out
# because JSON Schema cannot state them: the stem/head/layer kind that the input
# type demands, "at least one dense_block", "compression or out_channels",
# pool padding against kernel size, and everything the static pass finds
# (spatial size reaching 0). NaN/inf are left out because JSON has no such values.
AGREEMENT = {
    "tutorial": (TUTORIAL, True),
    "mlp": (MLP, True),
    "no_defaults": (_edit(TUTORIAL, ("defaults",), _DELETE), True),
    "bn_size_null_in_block": (_edit(TUTORIAL, ("body", 0, "bn_size"), None), True),
    "count_as_string": (_edit(TUTORIAL, ("body", 0, "num_layers"), "4"), False),
    "count_as_float": (_edit(TUTORIAL, ("body", 0, "num_layers"), 4.5), False),
    "count_zero": (_edit(TUTORIAL, ("body", 0, "num_layers"), 0), False),
    "negative_growth": (_edit(TUTORIAL, ("defaults", "growth_rate"), -1), False),
    "bool_as_string": (_edit(TUTORIAL, ("stem", "bias"), "true"), False),
    "compression_zero": (_edit(TUTORIAL, ("body", 1, "compression"), 0), False),
    "compression_above_one": (_edit(TUTORIAL, ("body", 1, "compression"), 1.01), False),
    "drop_rate_one": (_edit(TUTORIAL, ("defaults", "drop_rate"), 1.0), False),
    "unknown_field": (_edit(TUTORIAL, ("defaults", "momery_efficient"), True), False),
    "unknown_tag": (_edit(TUTORIAL, ("body", 0, "type"), "dense_blok"), False),
    "missing_tag": (_edit(TUTORIAL, ("body", 0, "type"), _DELETE), False),
    "missing_head": (_edit(TUTORIAL, ("head",), _DELETE), False),
    "empty_body": (_edit(TUTORIAL, ("body",), []), False),
    "version_2": (_edit(TUTORIAL, ("archspec",), 2), False),
    "bad_name": (_edit(TUTORIAL, ("name",), "a b"), False),
    "empty_hidden": (_edit(MLP, ("stem", "hidden"), []), False),
    "enum_value": (_edit(TUTORIAL, ("stem", "pool"), "mean"), False),
    "top_level_list": ([TUTORIAL], False),
}


@pytest.mark.parametrize("spec_path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_file_satisfies_the_schema(spec_path: Path) -> None:
    raw = read_document(spec_path).data  # as written, `extends` and all
    resolved = load_document(spec_path).data
    assert list(VALIDATOR.iter_errors(raw)) == []
    assert list(VALIDATOR.iter_errors(resolved)) == []


@pytest.mark.parametrize("name", sorted(AGREEMENT))
def test_pydantic_and_json_schema_agree(name: str) -> None:
    data, valid = AGREEMENT[name]
    assert VALIDATOR.is_valid(data) is valid
    try:
        Spec.model_validate(data)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is valid


def test_committed_schema_and_reference_are_fresh() -> None:
    result = bounded.run([sys.executable, "docs/gen_reference.py", "--check"], cwd=ROOT, cpu_seconds=60)
    assert result.returncode == 0, result.stderr


def test_schema_command_prints_committed_file() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "docs" / "archspec.schema.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", [["validate", "specs/densenet201.yaml", "--verbose"], ["schema"]])
def test_validate_and_schema_never_import_torch(command: list[str]) -> None:
    probe = (
        "import sys\nfrom archspec.cli import main\n"
        "try:\n    main(%r)\nexcept SystemExit as done:\n    code = done.code\n"
        "print('torch' in sys.modules, code, file=sys.stderr)\n" % command
    )
    result = bounded.run([sys.executable, "-c", probe], cwd=ROOT, cpu_seconds=60)
    assert result.stderr.splitlines()[-1] == "False 0"
