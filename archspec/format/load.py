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
from archspec.format.paths import dotted, parse_dotted
from archspec.format.problems import from_pydantic, located
from archspec.format.schema import Spec
from archspec.format.shapes import static_pass
from archspec.format.yaml_source import Document

__all__ = ["dotted", "load_document", "load_spec", "located_in", "validate"]

MAX_PROBLEMS = 50
"""Problems reported for one spec; a generated file can hold thousands of the same mistake."""


def load_document(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    allow_extends_outside: bool = False,
) -> Document:
    """The spec data after ``extends`` and overrides, with the position of every value.

    ``allow_extends_outside`` lets ``extends`` read a base outside the spec's folder
    and the working directory (``--allow-extends-outside``; see docs/security.md).

    Raises:
        SpecError: a file cannot be read or parsed, or an override does not apply.
    """
    if isinstance(overrides, str):  # one assignment, not its characters one by one
        overrides = (overrides,)
    if isinstance(source, Mapping):
        document, file = Document(copy.deepcopy(dict(source))), None
    else:
        document = resolve(Path(source), str(source), allow_outside=allow_extends_outside)
        file = str(source)
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
        problems = list(error.problems)
        if error.message.startswith(GROUPS_REFUSED):
            problems = [*_every_part_refused(document.data, error.problems[0]), *problems[1:]]
            last = problems[-1]
            problems[-1] = Problem(f"{last.message}; {_group_counts(document.data, error.message)}", last.path)
        raise SpecError([located(problem, document) for problem in problems]) from None
    return spec


GROUPS_REFUSED = "group_norm with "
"""How ``vocabulary.check_norm`` starts the problem of a group count that does not divide a width."""
MAX_GROUPS_TRIED = 64


def _group_counts(data: dict[str, Any], message: str) -> str:
    """The group counts nearest the refused one (one below, one above) that every group norm of the
    spec could take: the spec is tried again with each count up to ``MAX_GROUPS_TRIED`` in all of them."""
    asked = int(message[len(GROUPS_REFUSED):].split()[0])
    working = [groups for groups in range(1, MAX_GROUPS_TRIED + 1) if _passes(_with_groups(data, groups))]
    near = [groups for groups in working if groups < asked][-1:] + [groups for groups in working if groups > asked][:1]
    return f"group counts that divide every width here: {' or '.join(map(str, near))}"


def _every_part_refused(data: dict[str, Any], first: Problem) -> list[Problem]:
    """``first`` and each later part whose group norm does not divide its widths either: the spec is
    tried again with each refused part's norm at one group, until it passes or fails otherwise."""
    refused, trial = [first], copy.deepcopy(data)
    while len(refused) <= MAX_PROBLEMS:
        part = trial
        try:
            for step in parse_dotted(refused[-1].path) or ():
                part = part[step]
            part["norm"] = {"type": "group_norm", "groups": 1}
        except (KeyError, IndexError, TypeError):  # not a part's path: report what was found
            break
        try:
            static_pass(Spec.model_validate(trial))
        except SpecError as error:
            if not error.message.startswith(GROUPS_REFUSED) or error.path == refused[-1].path:
                break
            refused.append(error.problems[0])
        except ValidationError:
            break
        else:
            break
    return refused


def _with_groups(value: Any, groups: int, key: str = "") -> Any:
    """``value`` with every group norm (a ``norm`` written ``group_norm`` or ``{type: group_norm}``) at ``groups``."""
    if key == "norm" and (value == "group_norm" or isinstance(value, dict) and value.get("type") == "group_norm"):
        return {"type": "group_norm", "groups": groups}
    if isinstance(value, dict):
        return {name: _with_groups(item, groups, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_with_groups(item, groups) for item in value]
    return value


def _passes(data: dict[str, Any]) -> bool:
    try:
        static_pass(Spec.model_validate(data))
    except (ValidationError, SpecError):
        return False
    return True


def load_spec(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    allow_extends_outside: bool = False,
) -> Spec:
    """Load and validate a spec from a YAML/JSON file or a mapping.

    Args:
        source: path to a ``.yaml``/``.yml``/``.json`` file, or the spec as a mapping.
        overrides: ``PATH=VALUE`` assignments applied after ``extends`` and before
            validation (``head.num_classes=10``, ``body[2].num_layers=32``); a single
            string is one assignment.
        allow_extends_outside: let ``extends`` read a base outside the spec's folder and
            the working directory.

    Returns:
        The validated spec, with every dense block's defaults filled in.

    Raises:
        SpecError: the file cannot be read or parsed, an override does not apply,
            or the spec is invalid; every problem carries its file, line and path.
    """
    return validate(load_document(source, overrides, allow_extends_outside=allow_extends_outside))


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
