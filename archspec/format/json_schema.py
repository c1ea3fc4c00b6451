"""The JSON Schema of the spec format, for editors and other tools.

Generated from the pydantic models, so field descriptions come from the same
docstrings as the generated reference. A file that ``extends`` another states
only what differs, so for such a file no top-level field is required.
"""

from __future__ import annotations

import json
from typing import Any

from archspec.format.schema import Spec

SCHEMA_ID = "https://archspec.dev/archspec.schema.json"

_EXTENDS = {
    "type": "string",
    "minLength": 1,
    "description": "Path (relative to this file) of a spec this one builds on: mappings "
    "merge deeply, lists and plain values are replaced whole.",
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every spec file must satisfy."""
    schema = Spec.model_json_schema()
    required = schema.pop("required")
    schema["properties"]["extends"] = _EXTENDS
    schema["if"] = {"not": {"required": ["extends"]}}
    schema["then"] = {"required": required}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def json_schema_text() -> str:
    """``json_schema()`` as the text committed at ``docs/archspec.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
