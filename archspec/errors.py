"""The errors users see: ``SpecError`` for bad input (exit 2), ``RunError`` for work that
failed through no fault of the input (exit 1), and the problems they carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SHOWN = 80
"""Most characters of a value quoted in a message: a message is one line, whatever the input."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as precisely as the input allows."""

    message: str
    path: str = ""
    """Dotted field path in the spec (``body[2].num_layers``), or empty."""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    option: str = ""
    """The command-line option or argument at fault (``--memory``), when it is not a spec field."""

    def __str__(self) -> str:
        where = ":".join(
            str(part) for part in (self.file, self.line, self.column) if part is not None
        )
        parts = (where, self.path or self.option, self.message)
        return ": ".join(printable(part) for part in parts if part)


class SpecError(Exception):
    """A spec, override, option or weights file that archspec refuses.

    Attributes:
        problems: every problem found, in file order; the first is also exposed
            as ``file``, ``line``, ``column``, ``path`` and ``message``.
    """

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = Problem(problems)
        if isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.column = first.column
        self.path = first.path
        self.message = first.message
        super().__init__("\n".join(str(problem) for problem in self.problems))


class RunError(Exception):
    """Work on a valid input failed (an exporter crashed, a measured step died): exit 1, one line."""


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``), so it
    cannot clear a terminal or forge a second line of output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(value: Any, limit: int = SHOWN) -> str:
    """``value`` as a message quotes it: repr-like, escaped, at most about ``limit`` characters.

    A string is quoted (``'densenet121'``); anything else is its ``repr``. A longer
    text ends in ``…``; an integer too long to print is described by its size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    if isinstance(value, str):
        body = printable(value[: limit + 1]).replace("'", "\\'")
        if len(body) > limit or len(value) > limit:
            body = body[: limit - 1] + "…"
        return f"'{body}'"
    text = printable(repr(value)) if not isinstance(value, (dict, list)) else _short_repr(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: Any, limit: int) -> str:
    """The repr of a list or mapping, stopped soon after ``limit`` characters (it may be huge)."""
    pieces: list[str] = []
    size = 0
    items = value.items() if isinstance(value, dict) else value
    for item in items:
        piece = (f"{quoted(item[0], limit)}: {quoted(item[1], limit)}" if isinstance(value, dict)
                 else quoted(item, limit))
        pieces.append(piece)
        size += len(piece) + 2
        if size > limit:
            break
    open_, close = "{}" if isinstance(value, dict) else "[]"
    return printable(open_ + ", ".join(pieces) + close)


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message (its type's name if it has none)."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
