"""Spec text → validated ``Spec``: parsing, ``--set`` overrides, pydantic errors as ``SpecError``."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from archspec.errors import Problem, SpecError
from archspec.spec.schema import PART_TAGS, PartError, Spec
from archspec.spec.shapes import static_pass

_OVERRIDE_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def dotted(loc: Iterable[str | int]) -> str:
    """``("body", 2, "num_layers")`` → ``body[2].num_layers``."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def read_document(path: Path) -> Any:
    """Parse a YAML or JSON file into plain data."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(Problem(f"cannot read spec: {error.strerror}", file=str(path))) from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(Problem(f"not valid YAML/JSON: {error}", file=str(path))) from None


def _override_steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    position = 0
    for match in _OVERRIDE_STEP.finditer(path):
        separator = path[position : match.start()]
        if separator not in ("", ".") or (separator == "." and not steps):
            break
        steps.append(match.group(1) if match.group(1) else int(match.group(2)))
        position = match.end()
    if not steps or position != len(path):
        raise SpecError(Problem(f"cannot parse override path {path!r}", path=path))
    return steps


def apply_override(data: Any, assignment: str) -> None:
    """Apply one ``PATH=VALUE`` override in place; VALUE is read as a YAML scalar."""
    path, separator, raw = assignment.partition("=")
    if not separator:
        raise SpecError(Problem(f"override {assignment!r} is not PATH=VALUE"))
    steps = _override_steps(path.strip())
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise SpecError(Problem(f"cannot parse value {raw!r}", path=path)) from None
    target = data
    for depth, step in enumerate(steps[:-1]):
        target = _step_into(target, step, dotted(steps[: depth + 1]))
    last = steps[-1]
    if isinstance(last, int):
        _step_into(target, last, path)  # index must exist
    elif not isinstance(target, dict):
        raise SpecError(Problem("override target is not a mapping", path=path))
    target[last] = value


def _step_into(container: Any, step: str | int, where: str) -> Any:
    if isinstance(step, int):
        if not isinstance(container, list) or step >= len(container):
            raise SpecError(Problem("no such list item to override", path=where))
        return container[step]
    if not isinstance(container, dict):
        raise SpecError(Problem("override target is not a mapping", path=where))
    return container.setdefault(step, {})


def _problem(error: Mapping[str, Any], file: str | None) -> Problem:
    # pydantic puts the selected union member's tag in the location; users never wrote it.
    path = dotted(step for step in error["loc"] if step not in PART_TAGS)
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, PartError):
        return Problem(str(cause), path=cause.path, file=file)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("missing", "extra_forbidden"):
        message += f" (got {error['input']!r})"
    return Problem(message, path=path, file=file)


def validate(data: Any, file: str | None = None) -> Spec:
    """Validate plain data as a spec and run the static pass over it.

    Raises:
        SpecError: every schema problem at once, or the first static-pass problem.
    """
    try:
        spec = Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError([_problem(item, file) for item in error.errors()]) from None
    try:
        static_pass(spec)
    except SpecError as error:
        raise SpecError(
            [Problem(p.message, p.path, file, p.line, p.column) for p in error.problems]
        ) from None
    return spec


def load_spec(source: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()) -> Spec:
    """Load and validate a spec from a YAML/JSON file or a mapping.

    Args:
        source: path to a ``.yaml``/``.yml``/``.json`` file, or the spec as a mapping.
        overrides: ``PATH=VALUE`` assignments applied before validation
            (``head.num_classes=10``, ``body[2].num_layers=32``).

    Returns:
        The validated spec, with every dense block's defaults filled in.

    Raises:
        SpecError: the file cannot be read or parsed, or the spec is invalid.
    """
    if isinstance(source, Mapping):
        data, file = copy.deepcopy(dict(source)), None
    else:
        data, file = read_document(Path(source)), str(source)
    for assignment in overrides:
        try:
            apply_override(data, assignment)
        except SpecError as error:
            raise SpecError([Problem(p.message, p.path, file) for p in error.problems]) from None
    return validate(data, file)
