"""A validated spec written back out: what ``extends``, defaults and overrides resolved to."""

from __future__ import annotations

from typing import Any

import yaml

from archspec.format.schema import Spec
from archspec.format.shapes import static_pass


def resolved_document(spec: Spec) -> dict[str, Any]:
    """The spec as plain data with every inherited field written out where it applies.

    The ``Spec`` itself keeps what the user wrote; the static pass resolves each part's
    inheritance, and the body here is taken from its stages.
    """
    document = spec.model_dump(mode="json")
    stages = static_pass(spec).stages
    document["body"] = [stage.part.model_dump(mode="json") for stage in stages[1:-1]]
    return document


def spec_yaml(spec: Spec) -> str:
    """The fully resolved spec as YAML, fields in schema order; loading it gives the same network."""
    return yaml.safe_dump(resolved_document(spec), sort_keys=False, allow_unicode=True)
