"""Pydantic's validation errors → ``Problem``s at the line and column a user wrote.

pydantic locates an error by field path; the document knows where each path
was written. This module joins the two, drops the union tag pydantic puts in
its paths, and words each error for someone editing a spec file.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from archspec.errors import Problem, quoted
from archspec.format.paths import Loc, dotted, parse_dotted
from archspec.format.schema import PartError, Spec
from archspec.format.suggest import did_you_mean
from archspec.format.yaml_source import Document

def located(problem: Problem, document: Document) -> Problem:
    """``problem`` (whose path is a dotted field path) placed where that field was written."""
    loc = parse_dotted(problem.path) or ()
    where = document.position(loc)
    if where is None:
        return problem
    return where.problem(problem.message, problem.path)


def from_pydantic(error: dict[str, Any], document: Document) -> Problem:
    """One pydantic error dict as a located problem."""
    loc = _user_loc(error["loc"], document.data)
    kind = error["type"]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, PartError):
        return located(Problem(str(cause), path=cause.path), document)
    if kind == "missing":
        where = document.position(loc[:-1])
        message = "required field is missing"
    elif kind == "extra_forbidden":
        where = document.position(loc, key=True)
        message = f"unknown field {quoted(loc[-1])}" + did_you_mean(
            str(loc[-1]), _fields_at(loc[:-1], document.data)
        )
    elif kind == "union_tag_invalid":
        tag_loc = (*loc, "type")
        where = document.position(tag_loc)
        tags = [tag.strip("'") for tag in error["ctx"]["expected_tags"].split(", ")]
        tag = error["ctx"]["tag"]
        return _at(where, f"unknown type {quoted(tag)}" + did_you_mean(str(tag), tags), tag_loc)
    elif kind == "union_tag_not_found":
        where = document.position(loc)
        tags = _tags_at(loc, document.data)
        message = "needs a type: one of " + ", ".join(tags)
        return _at(where, message, (*loc, "type"))
    else:
        where = document.position(loc)
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if not isinstance(value, (dict, list)) and kind != "value_error":
            message += f" (got {quoted(value)})"
    return _at(where, message, loc)


def _at(where: Any, message: str, loc: Loc) -> Problem:
    if where is None:
        return Problem(message, path=dotted(loc))
    return where.problem(message, dotted(loc))


def _user_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """pydantic's location without the union tags it inserts (``body[2].dense_block.x``)."""
    steps: list[str | int] = []
    cursor = data
    for step in loc:
        if isinstance(cursor, dict) and step not in cursor and cursor.get("type") == step:
            continue  # pydantic's name for the selected union member
        steps.append(step)
        if isinstance(cursor, dict):
            cursor = cursor.get(step)
        elif isinstance(cursor, list) and isinstance(step, int) and step < len(cursor):
            cursor = cursor[step]
        else:
            cursor = None
    return tuple(steps)


def _members(annotation: Any) -> list[Any]:
    """The classes an annotation allows, through ``Annotated``, ``Optional`` and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _models_at(loc: Loc, data: Any) -> list[type[BaseModel]]:
    """The models that may validate the value at ``loc`` (one, once a ``type`` tag selects it)."""
    annotation: Any = Spec
    cursor = data
    for step in loc:
        members = _members(annotation)
        if isinstance(step, int):
            lists = [member for member in members if get_origin(member) is list]
            if not lists:
                return []
            annotation = get_args(lists[0])[0]
            cursor = cursor[step] if isinstance(cursor, list) and step < len(cursor) else None
            continue
        models = _narrowed(members, cursor)
        if len(models) != 1 or step not in models[0].model_fields:
            return []
        annotation = models[0].model_fields[step].annotation
        cursor = cursor.get(step) if isinstance(cursor, dict) else None
    return _narrowed(_members(annotation), cursor)


def _narrowed(members: list[Any], data: Any) -> list[type[BaseModel]]:
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    tag = data.get("type") if isinstance(data, dict) else None
    return [model for model in models if tag in _literal(model)] or models


def _literal(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("type")
    return get_args(field.annotation) if field and get_origin(field.annotation) is Literal else ()


def _fields_at(loc: Loc, data: Any) -> list[str]:
    models = _models_at(loc, data)
    return list(models[0].model_fields) if len(models) == 1 else []


def _tags_at(loc: Loc, data: Any) -> list[str]:
    return [tag for model in _models_at(loc, data) for tag in _literal(model)]
