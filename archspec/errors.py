"""The errors users see: ``SpecError`` for bad input (exit 2), ``RunError`` for work that
failed through no fault of the input (exit 1), and the problems they carry."""

from __future__ import annotations

from dataclasses import dataclass


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
        return ": ".join(part for part in (where, self.path or self.option, self.message) if part)


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


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message (its type's name if it has none)."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
