"""``--set PATH=VALUE``: change one field of a spec before it is validated.

VALUE is read with the same safe reader as spec files, so ``--set x=!!python/…``
is refused like it would be in a file. Intermediate mappings are created as
needed (``--set defaults.memory_efficient=true`` works without a ``defaults:``);
they are located at the override, so an error about them blames the option, not
a line of the spec.
"""

from __future__ import annotations

from typing import Any

from archspec.errors import SHOWN, SpecError
from archspec.format.paths import Loc, dotted, parse_dotted
from archspec.format.yaml_source import Document, Position, parse_text

MAX_PATH = 200
"""Longest PATH of an override, in characters; the deepest field path of a spec is under 40."""


def apply_override(document: Document, assignment: str, file: str | None = None) -> None:
    """Apply one ``PATH=VALUE`` override to ``document`` in place.

    Args:
        document: the spec data, changed in place.
        assignment: ``PATH=VALUE``.
        file: the spec file, named in errors alongside the override.

    Raises:
        SpecError: the assignment cannot be parsed or its path does not exist;
            the problem names the override.
    """
    shown = assignment if len(assignment) <= SHOWN else assignment[: SHOWN - 1] + "…"
    origin = Position(file, via=f"--set {shown}")
    path, separator, raw = assignment.partition("=")
    if len(path) > MAX_PATH:
        raise SpecError(origin.problem(f"PATH of {len(path):,} characters; at most {MAX_PATH}"))
    loc = parse_dotted(path.strip())
    if not separator or loc is None:
        raise SpecError(
            origin.problem("expected PATH=VALUE with PATH like head.num_classes or body[2].num_layers")
        )
    try:
        value = parse_text(raw, f"--set {shown}")
    except SpecError as error:
        raise SpecError(origin.problem(error.message, dotted(loc))) from None
    parent = document.data
    for depth, step in enumerate(loc[:-1]):
        parent = _step_into(parent, step, loc[: depth + 1], origin, document)
    last = loc[-1]
    if isinstance(last, int):
        _step_into(parent, last, loc, origin, document)  # the item must exist
    elif not isinstance(parent, dict):
        raise SpecError(origin.problem("not a mapping, cannot set a field in it", dotted(loc[:-1])))
    parent[last] = value.data
    document.drop(loc)
    document.keys[loc] = origin
    for inner in value.values:
        document.values[(*loc, *inner)] = origin


def _step_into(container: Any, step: str | int, loc: Loc, origin: Position, document: Document) -> Any:
    if isinstance(step, int):
        if not isinstance(container, list) or step >= len(container):
            size = len(container) if isinstance(container, list) else 0
            raise SpecError(origin.problem(f"no such list item (the list has {size})", dotted(loc)))
        return container[step]
    if not isinstance(container, dict):
        raise SpecError(origin.problem("not a mapping, cannot set a field in it", dotted(loc[:-1])))
    if step not in container:
        container[step] = {}  # created by the override, so located there
        document.keys[loc] = document.values[loc] = origin
    return container[step]
