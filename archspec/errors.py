"""The one exception type users see for bad input, and the problems it carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as precisely as the input allows."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = ":".join(
            str(part) for part in (self.file, self.line, self.column) if part is not None
        )
        return ": ".join(part for part in (where, self.path, self.message) if part)


class SpecError(Exception):
    """A spec, override or weights file that archspec refuses.

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
