"""Spec file → validated ``Spec``: read, ``extends``, ``--set`` overrides, validate, static pass.

Every problem found comes back as one ``SpecError`` whose problems point at the
file, line and column where the offending value was written.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archspec.errors import Problem, SpecError
from archspec.format.extends import resolve
from archspec.format.overrides import apply_override
from archspec.format.paths import dotted
from archspec.format.problems import from_pydantic, located
from archspec.format.schema import Spec
from archspec.format.shapes import static_pass
from archspec.format.yaml_source import Document

__all__ = ["dotted", "load_document", "load_spec", "located_in", "validate"]

MAX_PROBLEMS = 50
"""Problems reported for one spec; a generated file can hold thousands of the same mistake."""


def load_document(
    source: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()
) -> Document:
    """The spec data after ``extends`` and overrides, with the position of every value.

    Raises:
        SpecError: a file cannot be read or parsed, or an override does not apply.
    """
    if isinstance(source, Mapping):
        document, file = Document(copy.deepcopy(dict(source))), None
    else:
        document, file = resolve(Path(source), str(source)), str(source)
    for assignment in overrides:
        apply_override(document, assignment, file)
    return document


def validate(document: Document) -> Spec:
    """Validate a document as a spec and run the static pass over it.

    Raises:
        SpecError: every schema problem at once, or the static pass's problem.
    """
    try:
        spec = Spec.model_validate(document.data)
    except ValidationError as error:
        problems = sorted((from_pydantic(item, document) for item in error.errors()), key=_file_order)
        if len(problems) > MAX_PROBLEMS:
            hidden, next_one = len(problems) - MAX_PROBLEMS, problems[MAX_PROBLEMS]
            more = Problem(f"{hidden:,} more problems from here on, not shown", next_one.path,
                           next_one.file, next_one.line, next_one.column)
            problems = [*problems[:MAX_PROBLEMS], more]
        raise SpecError(problems) from None
    try:
        static_pass(spec)
    except SpecError as error:
        raise SpecError([located(problem, document) for problem in error.problems]) from None
    return spec


def load_spec(source: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()) -> Spec:
    """Load and validate a spec from a YAML/JSON file or a mapping.

    Args:
        source: path to a ``.yaml``/``.yml``/``.json`` file, or the spec as a mapping.
        overrides: ``PATH=VALUE`` assignments applied after ``extends`` and before
            validation (``head.num_classes=10``, ``body[2].num_layers=32``).

    Returns:
        The validated spec, with every dense block's defaults filled in.

    Raises:
        SpecError: the file cannot be read or parsed, an override does not apply,
            or the spec is invalid; every problem carries its file, line and path.
    """
    return validate(load_document(source, overrides))


@contextlib.contextmanager
def located_in(source: object, overrides: Iterable[str] = ()) -> Iterator[None]:
    """Place the problems of a ``SpecError`` raised inside where ``source`` wrote their paths.

    For a check made after loading (a runtime that cannot run a part): ``source`` is what
    ``load_spec`` was given; a file is read again, a ``Spec`` object has no positions.
    """
    try:
        yield
    except SpecError as error:
        if not isinstance(source, (str, Path, Mapping)):
            raise
        document = load_document(source, overrides)
        raise SpecError([located(problem, document) for problem in error.problems]) from None


def _file_order(problem: Any) -> tuple[str, int, int]:
    return (problem.file or "", problem.line or 0, problem.column or 0)
