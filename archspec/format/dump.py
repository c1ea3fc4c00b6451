"""A validated spec written back out as YAML: what ``extends``, defaults and overrides resolved to."""

from __future__ import annotations

import yaml

from archspec.format.schema import Spec


def spec_yaml(spec: Spec) -> str:
    """The fully resolved spec as YAML, fields in schema order; loading it gives ``spec`` back."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
