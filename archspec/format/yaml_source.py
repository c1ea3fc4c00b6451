"""Spec text → plain data plus the file position of every key and value.

A spec file is untrusted input, so this reader is deliberately small: it walks
PyYAML's parse events itself (never a constructor that can build objects),
accepts only the plain YAML/JSON types (mapping, list, string, integer, float,
boolean, null), refuses duplicate keys, and stops at size, node-count and
nesting limits before any value is handed on. JSON files go through the same
reader: JSON is YAML's flow style, so positions and duplicate keys work alike
(a ``.json`` file is first checked by Python's JSON parser, so that its syntax
errors are JSON's).

Plain values are read as YAML 1.2 reads them, and a plain value that YAML 1.1
(PyYAML's resolver) and YAML 1.2 read differently is refused rather than guessed:
``1:30`` (90 in 1.1, text in 1.2), ``yes``/``no``/``on``/``off`` (booleans in 1.1),
``017`` (15 in 1.1, 17 in 1.2), ``0b101``, ``1_000``. ``0o17`` is 15, as in 1.2.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from archspec.errors import Problem, SpecError, quoted
from archspec.format.paths import Loc, dotted, file_kind

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_BYTES = 1 << 20
"""Largest spec file read (1 MiB); the reference specs are under 2 KiB."""
MAX_NODES = 100_000
"""Most values one document may hold after aliases are expanded (bounds "billion laughs")."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists, aliases expanded; a real spec nests four levels."""
MAX_INTEGER = 2**53
"""Largest integer a spec may hold (JSON's exact range): arithmetic on it stays within a float."""
MAX_KEY = 100
"""Longest mapping key, in characters; the longest field name is under 30."""

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null")}
_TIMESTAMP = f"{_TAG}timestamp"  # an unquoted date: kept as the text written
_MAX_DUPLICATES = 50  # duplicate keys reported before giving up on a file
_CONTAINER_TAGS = {f"{_TAG}map", f"{_TAG}seq"}
_EXPONENT = re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
# YAML 1.2's core schema, as far as it differs from the 1.1 resolver PyYAML uses.
_INT_12 = re.compile(r"^[-+]?[0-9]+$|^0x[0-9a-fA-F]+$")
_OCTAL_12 = re.compile(r"^0o[0-7]+$")
_FLOAT_12 = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)
_BOOL_12 = {"true", "True", "TRUE", "false", "False", "FALSE"}
_construct = SafeConstructor()
_resolver = Resolver()


@dataclass(frozen=True)
class Position:
    """Where something was written: 1-based line and column in ``file``.

    A value given on the command line has no line; ``via`` names the override.
    """

    file: str | None
    line: int | None = None
    column: int | None = None
    via: str = ""

    def problem(self, message: str, path: str = "") -> Problem:
        """A problem located here."""
        if self.via:
            message += f" (set by {self.via})"
        return Problem(message, path=path, file=self.file, line=self.line, column=self.column)


@dataclass
class Document:
    """Parsed spec data and where each part of it was written.

    ``values`` maps a location such as ``("body", 2, "num_layers")`` to the
    position of that value, ``keys`` to the position of the key that names it.
    """

    data: Any
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)

    def position(self, loc: Loc, *, key: bool = False) -> Position | None:
        """Position of ``loc`` (its key if ``key``), else of its nearest written ancestor."""
        for end in range(len(loc), -1, -1):
            here = loc[:end]
            found = (self.keys.get(here) if key and end == len(loc) else None) or self.values.get(here)
            if found is not None:
                return found
        return None

    def drop(self, loc: Loc) -> None:
        """Forget the positions of ``loc`` and everything under it."""
        size = len(loc)
        for table in (self.values, self.keys):
            for stale in [item for item in table if item[:size] == loc]:
                del table[stale]


@dataclass
class _Open:
    """A mapping or list being built, with where it is and what comes next."""

    value: dict[str, Any] | list[Any]
    loc: Loc
    anchor: str | None
    start: int  # index into the position log where this container's entries begin
    key: tuple[str, Position] | None = None  # the key whose value comes next
    height: int = 1  # levels of nesting at and below this container, aliases expanded
    seen: dict[str, Position] = field(default_factory=dict)  # where each key was first written


@dataclass
class Budget:
    """Values still allowed; one budget is shared by a spec and every file it extends."""

    left: int = MAX_NODES


class _Builder:
    """Turns one document's parse events into a ``Document``, enforcing the limits."""

    def __init__(self, file: str | None, budget: Budget):
        self.file = file
        self.problems: list[Problem] = []
        self.budget = budget
        self.stack: list[_Open] = []
        # anchor → (value, its positions relative to it, its size in values, its height)
        self.anchors: dict[str, tuple[Any, list[tuple[Loc, Position, bool]], int, int]] = {}
        # (relative location, position, is-key) for every key and value, in file order
        self.log: list[tuple[Loc, Position, bool]] = []
        self.root: Any = None
        self.done = False

    def at(self, event: events.Event) -> Position:
        mark = event.start_mark
        return Position(self.file, mark.line + 1, mark.column + 1)

    def fail(self, event: events.Event, message: str, loc: Loc = ()) -> SpecError:
        return SpecError([*self.problems, self.at(event).problem(message, dotted(loc))])

    def count(self, event: events.Event, nodes: int, loc: Loc) -> None:
        self.budget.left -= nodes
        if self.budget.left < 0:
            raise self.fail(
                event, f"more than {MAX_NODES:,} values (after expanding aliases); refusing to go on",
                loc,
            )

    def next_loc(self, event: events.Event) -> Loc | None:
        """Location of the value this event starts; ``None`` when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.loc, len(top.value))
        if top.key is None:
            return None
        return (*top.loc, top.key[0])

    def add(self, value: Any) -> None:
        """Place a finished value in its parent (or as the root)."""
        if not self.stack:
            self.root = value
            self.done = True
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
            return
        name, key_at = top.key
        top.key = None
        if name not in top.value:
            top.value[name] = value
            return
        self.problems.append(
            key_at.problem(
                f"duplicate key {quoted(name)} (first written at line {top.seen[name].line}); "
                "each key may appear once",
                path=dotted((*top.loc, name)),
            )
        )
        if len(self.problems) >= _MAX_DUPLICATES:
            raise SpecError(self.problems)

    def key(self, event: events.Event) -> None:
        top = self.stack[-1]
        if not isinstance(event, events.ScalarEvent):
            raise self.fail(event, "mapping keys must be plain strings, not lists or mappings", top.loc)
        name = self.scalar(event, top.loc, is_key=True)
        if not isinstance(name, str):
            raise self.fail(event, f"mapping keys must be strings, got {quoted(name)} (quote it)", top.loc)
        if len(name) > MAX_KEY:
            raise self.fail(
                event, f"a mapping key of {len(name):,} characters ({quoted(name, 40)}); "
                f"keys are at most {MAX_KEY}", top.loc,
            )
        where = self.at(event)
        self.log.append(((*top.loc, name), where, True))
        top.key = (name, where)
        top.seen.setdefault(name, where)

    def scalar(self, event: events.ScalarEvent, loc: Loc, *, is_key: bool = False) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolver.resolve(ScalarNode, event.value, event.implicit)
            if tag == f"{_TAG}str" and event.implicit[0] and _EXPONENT.match(event.value):
                tag = f"{_TAG}float"  # JSON's and YAML 1.2's 1e12; YAML 1.1 would keep the text
            if tag == f"{_TAG}str" and event.implicit[0] and _OCTAL_12.match(event.value):
                return self.integer(event, int(event.value[2:], 8), loc)  # YAML 1.2's 0o17
            if event.implicit[0] and not _same_in_12(tag, event.value):
                raise self.fail(event, _ambiguous(event.value, tag, is_key), loc)
        if tag == _TIMESTAMP:
            return event.value
        if tag == f"{_TAG}int" and len(event.value.replace("_", "").lstrip("+-0")) > 20:
            raise self.fail(event, _too_large(event.value), loc)  # before Python parses 10**4300
        if tag not in _SCALAR_TAGS:
            raise self.fail(event, f"tag {_shown(tag)} is not allowed: a spec holds plain data only", loc)
        try:
            value = _construct.yaml_constructors[tag](_construct, ScalarNode(tag, event.value))
        except (yaml.YAMLError, ValueError):
            raise self.fail(event, f"{quoted(event.value)} is not a valid {_shown(tag)}", loc) from None
        return self.integer(event, value, loc) if tag == f"{_TAG}int" else value

    def integer(self, event: events.ScalarEvent, value: int, loc: Loc) -> int:
        if abs(value) > MAX_INTEGER:
            raise self.fail(event, _too_large(event.value), loc)
        return value

    def feed(self, event: events.Event) -> None:
        if isinstance(event, (events.StreamStartEvent, events.StreamEndEvent,
                              events.DocumentStartEvent, events.DocumentEndEvent)):
            return
        if isinstance(event, (events.SequenceEndEvent, events.MappingEndEvent)):
            closed = self.stack.pop()
            if closed.anchor is not None:
                self.remember(closed)
            if self.stack:
                self.stack[-1].height = max(self.stack[-1].height, closed.height + 1)
            self.add(closed.value)
            return
        if self.done:
            raise self.fail(event, "more than one YAML document; a spec is a single document")
        loc = self.next_loc(event)
        if loc is None:
            self.key(event)
            return
        if isinstance(event, events.AliasEvent):
            self.alias(event, loc)
            return
        self.count(event, 1, loc)
        where = self.at(event)
        self.log.append((loc, where, False))
        if isinstance(event, events.ScalarEvent):
            value = self.scalar(event, loc)
            if event.anchor is not None:
                self.anchors[event.anchor] = (value, [((), where, False)], 1, 0)
            self.add(value)
            return
        if event.tag is not None and event.tag not in _CONTAINER_TAGS and event.tag != "!":
            raise self.fail(
                event, f"tag {_shown(event.tag)} is not allowed: a spec holds plain data only", loc
            )
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(event, f"nested more than {MAX_DEPTH} levels deep", loc)
        container: dict[str, Any] | list[Any] = (
            {} if isinstance(event, events.MappingStartEvent) else []
        )
        self.stack.append(_Open(container, loc, event.anchor, len(self.log) - 1))

    def remember(self, closed: _Open) -> None:
        """Keep an anchored container, its positions relative to it, and its size."""
        entries = self.log[closed.start :]
        base = len(closed.loc)
        relative = [(loc[base:], where, is_key) for loc, where, is_key in entries]
        size = sum(1 for _, _, is_key in entries if not is_key)
        self.anchors[closed.anchor] = (closed.value, relative, size, closed.height)

    def alias(self, event: events.AliasEvent, loc: Loc) -> None:
        if event.anchor not in self.anchors:
            raise self.fail(event, f"alias *{event.anchor} refers to an anchor not yet complete", loc)
        value, relative, size, height = self.anchors[event.anchor]
        self.count(event, size, loc)
        if len(self.stack) + height > MAX_DEPTH:  # checked before deepcopy recurses into it
            raise self.fail(
                event, f"nested more than {MAX_DEPTH} levels deep (through alias *{event.anchor})", loc
            )
        if self.stack:
            self.stack[-1].height = max(self.stack[-1].height, height + 1)
        where = self.at(event)
        self.log.append((loc, where, False))
        self.log.extend(((*loc, *rel), where, is_key) for rel, _, is_key in relative[1:])
        self.add(copy.deepcopy(value))

    def document(self) -> Document:
        if self.problems:
            raise SpecError(self.problems)
        doc = Document(self.root)
        for loc, where, is_key in self.log:
            (doc.keys if is_key else doc.values).setdefault(loc, where)
        return doc


def _same_in_12(tag: str, text: str) -> bool:
    """Whether YAML 1.2's core schema reads the plain scalar ``text`` as PyYAML's ``tag`` too."""
    if tag == f"{_TAG}bool":
        return text in _BOOL_12
    if tag == f"{_TAG}int":
        return bool(_INT_12.match(text)) and not re.match(r"^[-+]?0[0-9]", text)
    if tag == f"{_TAG}float":
        return bool(_FLOAT_12.match(text))
    return True


def _ambiguous(text: str, tag: str, is_key: bool) -> str:
    """Why a plain scalar that YAML 1.1 and 1.2 read differently is refused, and what to write."""
    try:
        old = _construct.yaml_constructors[tag](_construct, ScalarNode(tag, text))
    except (yaml.YAMLError, ValueError):
        old = None
    old_shown = str(old).lower() if isinstance(old, bool) else quoted(old)
    new = int(text, 10) if _INT_12.match(text) and not text.startswith("0x") else None
    new_shown = quoted(text) + " as text" if new is None else str(new)
    if is_key:
        fix = "quote it"
    elif new is not None:
        fix = f"write {old} or {new} without the leading zero (0o{old:o} is octal)"
    else:
        fix = f"write {old_shown}, or quote it for text"
    return (f"ambiguous value {quoted(text)}: YAML 1.1 reads {old_shown}, "
            f"YAML 1.2 reads {new_shown}; {fix}")


def _kind_of_value(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def _too_large(text: str) -> str:
    return f"integer {quoted(text, 40)} is out of range: a spec's integers are at most 2**53 in size"


def _shown(tag: str) -> str:
    shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _code(character: str | int) -> int:
    return ord(character) if isinstance(character, str) else character


def _line_column(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def parse_text(
    text: str, file: str | None = None, *, budget: Budget | None = None, is_json: bool = False
) -> Document:
    """Parse YAML or JSON text into a ``Document``.

    Args:
        text: the spec's text.
        file: how errors name it.
        budget: values allowed, shared with the other files of an ``extends`` chain.
        is_json: the text is JSON: its syntax is checked by JSON's rules first.

    Raises:
        SpecError: a syntax error, a forbidden tag, a duplicate key, or a limit exceeded.
    """
    if is_json:
        _check_json(text, file)
    builder = _Builder(file, Budget() if budget is None else budget)
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(part for part in (error.context, error.problem) if part)
        where = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        raise SpecError([*builder.problems, where.problem(f"YAML syntax: {message}")]) from None
    except yaml.reader.ReaderError as error:
        line, column = _line_column(text, error.position)
        raise SpecError(
            Position(file, line, column).problem(
                f"character U+{_code(error.character):04X} is not allowed in a spec ({error.reason})"
            )
        ) from None
    except yaml.YAMLError as error:
        raise SpecError(Position(file, 1, 1).problem(f"YAML syntax: {error}")) from None
    return builder.document()


def _check_json(text: str, file: str | None) -> None:
    """Refuse what JSON's grammar refuses (a trailing comma, single quotes), located."""
    try:
        json.loads(text, parse_int=len, parse_float=len, parse_constant=len)
    except json.JSONDecodeError as error:
        where = Position(file, error.lineno, error.colno)
        raise SpecError(where.problem(f"JSON syntax: {error.msg}")) from None
    except (RecursionError, ValueError):
        pass  # too deep for Python's parser: the reader below reports the nesting limit


def kind_of(mode: int) -> str | None:
    """What a non-regular file is (``a FIFO (named pipe)``), or ``None`` for a regular file."""
    return None if stat.S_ISREG(mode) else file_kind(mode)


def read_bytes(path: Path, shown: str) -> bytes:
    """The contents of a regular file of at most ``MAX_BYTES``.

    Raises:
        SpecError: the file is missing, unreadable, not a regular file, or too large.
    """
    try:
        kind = kind_of(path.stat().st_mode)  # by kind, before anything is opened
        if kind is not None:
            raise SpecError(Problem(f"cannot read spec: {kind}", file=shown))
        # O_NONBLOCK: a FIFO swapped in after the check cannot block the open.
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(handle, "rb") as stream:
            kind = kind_of(os.fstat(stream.fileno()).st_mode)
            if kind is not None:
                raise SpecError(Problem(f"cannot read spec: {kind}", file=shown))
            content = stream.read(MAX_BYTES + 1)
    except OSError as error:
        reason = error.strerror or os.strerror(error.errno or 0)
        raise SpecError(Problem(f"cannot read spec: {reason}", file=shown)) from None
    if len(content) > MAX_BYTES:
        raise SpecError(
            Problem(f"file is larger than the {MAX_BYTES:,}-byte limit for a spec", file=shown)
        )
    return content


def decode(content: bytes, shown: str) -> str:
    """UTF-8 text of ``content``, or an error at the first byte that is not UTF-8."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        prefix = content[: error.start].decode("utf-8", errors="replace")
        line, column = _line_column(prefix, len(prefix))
        raise SpecError(
            Position(shown, line, column).problem(
                f"not UTF-8 text (byte 0x{content[error.start]:02x}); a spec is a text file"
            )
        ) from None


def read_document(path: Path, shown: str | None = None, *, budget: Budget | None = None) -> Document:
    """Read and parse a YAML/JSON spec file whose top level is a mapping.

    Args:
        path: the file to read.
        shown: how errors name the file (defaults to ``str(path)``).
        budget: values allowed, shared with the other files of an ``extends`` chain.

    Raises:
        SpecError: the file cannot be read or parsed, or is not a mapping.
    """
    shown = str(path) if shown is None else shown
    text = decode(read_bytes(path, shown), shown)
    document = parse_text(text, shown, budget=budget, is_json=path.suffix.lower() == ".json")
    if document.data is None:
        raise SpecError(Position(shown, 1, 1).problem("the spec is empty; it must be a mapping"))
    if not isinstance(document.data, dict):
        kind = _kind_of_value(document.data)  # not the value: a base may be any file
        where = document.values.get((), Position(shown, 1, 1))
        raise SpecError(where.problem(f"a spec must be a mapping at the top level, got {kind}"))
    return document
