"""The examples in README.md and docs/*.md, found by Sybil and run as a reader would run them.

Sybil finds three kinds of example in a page:

- ``console`` blocks: each line after ``$ `` is a command, the lines under it are what it
  prints (stdout and stderr, as a terminal shows them). ``archspec ...`` runs in this process
  through click's test runner (importing torch once, not once per command); anything else
  runs under bash, with ``archspec`` on its PATH as ``python -m archspec`` of this checkout.
- ``python`` blocks: run as code; where they show output (``>>>`` lines), as doctests.
- ``<!-- skip: next "why" -->`` before an example: not run in CI (a GPU, a long export, a
  download); the reason is required and is printed with the count of skipped examples.

A line ``...`` alone in a console output stands for any number of lines the page leaves
out; every line shown is compared exactly. A command that exits non-zero must be followed
by ``$ echo $?`` and its status, so an exit code is never left unchecked.
"""

from __future__ import annotations

import difflib
import doctest
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
import unittest
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from sybil import Example, Sybil
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from archspec.cli import main
from tests import bounded

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

ELISION = "..."
SHOW_STATUS = "echo $?"
# What a page's commands may read or write, copied so that they write into a scratch copy
# (`archspec diagram ... -o docs/images/densenet121.svg`) and never into the checkout.
WORKSPACE_DIRS = ("specs", "docs")
# A command from a page that works longer than this (CPU seconds of each of its processes) is a
# page to shorten or mark as skipped.
COMMAND_CPU_S = 300


@dataclass(frozen=True)
class Command:
    """One ``$ `` line of a console block and the output the page shows under it."""

    line: int
    text: str
    expected: tuple[str, ...]
    output_line: int  # the page line of expected[0]


def commands(source: str, first_line: int) -> list[Command]:
    """Split a console block into commands; a trailing backslash continues a command."""
    found: list[Command] = []
    text: str | None = None
    line = output_line = first_line
    expected: list[str] = []
    continued = False
    for number, raw in enumerate(source.splitlines(), start=first_line):
        if continued:
            continued = raw.rstrip().endswith("\\")
            text = " ".join([text, raw.strip().removesuffix("\\").strip()])
            output_line = number + 1
            continue
        if raw.startswith("$ "):
            if text is not None:
                found.append(Command(line, text, _trimmed(expected), output_line))
            text, line, output_line, expected = raw[2:].rstrip(), number, number + 1, []
            continued = text.endswith("\\")
            text = text.removesuffix("\\").strip()
        elif text is None:
            if raw.strip():
                raise ValueError(f"line {number}: output before any `$ ` command: {raw!r}")
        else:
            expected.append(raw.rstrip())
    if text is not None:
        found.append(Command(line, text, _trimmed(expected), output_line))
    return found


def _trimmed(lines: list[str]) -> tuple[str, ...]:
    """Blank lines at the end of a block or an output are layout, not output."""
    while lines and not lines[-1]:
        lines = lines[:-1]
    return tuple(lines)


def _pattern(expected: tuple[str, ...]) -> str:
    """A regular expression for whole lines: each shown line literally, ``...`` as any lines."""
    return "".join(
        r"(?:[^\n]*\n)*?" if line == ELISION else re.escape(line) + r"\n" for line in expected
    )


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """Whether ACTUAL is EXPECTED with each ``...`` line standing for zero or more lines."""
    return re.fullmatch(_pattern(expected), "".join(f"{line}\n" for line in actual)) is not None


def first_difference(expected: tuple[str, ...], actual: list[str]) -> int:
    """The index of the first shown line that the output does not bear out (len: it goes on)."""
    text = "".join(f"{line}\n" for line in actual)
    agreed = 0
    for count in range(1, len(expected) + 1):
        if re.match(_pattern(expected[:count]), text) is None:
            break
        agreed = count
    return agreed


_SHELL_OPERATORS = set("|&;<>()`$")


def _archspec_arguments(text: str) -> list[str] | None:
    """The arguments of an ``archspec`` command that needs no shell, globs expanded; else None."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        return None
    if any(set(word) & _SHELL_OPERATORS for word in words):
        return None
    if words[:1] == ["archspec"]:
        words = words[1:]
    elif words[:3] in (["python", "-m", "archspec"], ["python3", "-m", "archspec"]):
        words = words[3:]
    else:
        return None
    arguments: list[str] = []
    for word in words:
        expanded = sorted(glob.glob(word)) if set(word) & set("*?[") else []
        arguments += expanded or [word]
    return arguments


def _shim_path() -> str:
    """A PATH whose ``archspec`` is ``python -m archspec`` of this checkout, with this Python."""
    shim = Path.cwd() / ".docs-bin"
    if not shim.exists():
        shim.mkdir()
        script = shim / "archspec"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m archspec "$@"\n')
        script.chmod(0o755)
    return os.pathsep.join([str(shim), str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def run(text: str, last_status: int) -> tuple[int, list[str]]:
    """Run one command from a page; its exit status and the lines it printed."""
    arguments = _archspec_arguments(text)
    if arguments is not None:
        result = CliRunner().invoke(main, arguments, prog_name="archspec")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(*result.exc_info))
            return 1, [*result.output.splitlines(), "(uncaught exception)", *trace.splitlines()]
        return result.exit_code, [line.rstrip() for line in result.output.splitlines()]
    environment = {**os.environ, "PATH": _shim_path(),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    completed = bounded.run(
        ["bash", "-c", f"(exit {last_status}); {text}"],
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, cpu_seconds=COMMAND_CPU_S,
    )
    return completed.returncode, [line.rstrip() for line in completed.stdout.splitlines()]


def label(example: Example, line: int | None = None) -> str:
    """``docs/page.md:LINE``, relative to the page's document root (the checkout, or a copy)."""
    path = Path(example.path)
    root = example.document.namespace.get("__docs_root__", ROOT)
    try:
        shown = path.relative_to(root)
    except ValueError:
        shown = path
    return f"{shown}:{example.line if line is None else line}"


def evaluate_console(example: Example) -> str | None:
    """Run every command of a console block; a message per command whose output differs."""
    try:
        session = commands(str(example.parsed), example.line + 1)
    except ValueError as error:
        return f"{label(example)}: {error}"
    if not session:
        return f"{label(example)}: a console block without a `$ ` command"
    problems = []
    status = 0
    for index, command in enumerate(session):
        status, printed = run(command.text, status)
        actual = list(_trimmed(printed))
        where = label(example, command.line)
        if not matches(command.expected, actual):
            # Name the first line of the page that the output contradicts, not just the command.
            differs = label(example, command.output_line + first_difference(command.expected, actual))
            diff = difflib.unified_diff(list(command.expected), actual,
                                        "page", "printed", lineterm="", n=2)
            problems.append(f"{differs}: `$ {command.text}` (line {command.line}) printed "
                            f"something else, exit status {status}:\n" + "\n".join(diff))
        following = session[index + 1].text if index + 1 < len(session) else None
        if status != 0 and command.text != SHOW_STATUS and following != SHOW_STATUS:
            problems.append(f"{where}: `$ {command.text}` exited with status {status}; "
                            f"the page must show it with `$ {SHOW_STATUS}` on the next line")
    return "\n\n".join(problems) or None


SYBIL = Sybil(
    parsers=[
        CodeBlockParser(language="console", evaluator=evaluate_console),
        PythonCodeBlockParser(),
        SkipParser(),
    ],
)


@dataclass(frozen=True)
class Outcome:
    """What became of one example: ``passed``, ``skipped`` (with the page's reason) or ``failed``."""

    label: str
    status: str
    message: str = ""
    last_line: int = 0


def _is_directive(example: Example) -> bool:
    """A ``skip`` comment: it changes how the next examples run but is not one itself."""
    return isinstance(example.region.evaluator, Skipper)


def run_page(page: Path, workspace: Path, docs_root: Path = ROOT) -> Iterator[Outcome]:
    """Evaluate a page's examples in order, in WORKSPACE (a scratch copy of specs/ and docs/).

    Yields one outcome per example; skip directives are not examples, but one without a
    reason fails, since the reason is what a reader and the summary are told.
    """
    for name in WORKSPACE_DIRS:
        if not (workspace / name).exists():
            shutil.copytree(ROOT / name, workspace / name)
    document = SYBIL.parse(page)
    document.namespace["__docs_root__"] = docs_root
    previous = Path.cwd()
    os.chdir(workspace)
    try:
        for example in document:
            if _is_directive(example):
                action, reason = example.parsed
                if action in ("next", "start") and not reason:
                    yield Outcome(label(example), "failed",
                                  f"{label(example)}: `skip: {action}` needs a reason in quotes, "
                                  f'e.g. <!-- skip: {action} "exports DenseNet-121 (minutes)" -->')
                example.evaluate()
                continue
            last_line = document.text.count("\n", 0, example.end) + 1
            try:
                example.evaluate()
            except unittest.SkipTest as skip:
                yield Outcome(label(example), "skipped", str(skip), last_line)
            except Exception as error:  # the example's own failure, reported with its page and line
                yield Outcome(label(example), "failed", _message(example, error), last_line)
            else:
                yield Outcome(label(example), "passed", last_line=last_line)
    finally:
        os.chdir(previous)


def _message(example: Example, error: Exception) -> str:
    """The failure as the page's author needs it: page and line first."""
    text = getattr(error, "result", None) or f"{type(error).__name__}: {error}"
    if text.startswith(label(example).rsplit(":", 1)[0] + ":"):
        return text  # a console block's message, which names its own lines
    line = example.line
    if isinstance(example.parsed, doctest.Example):  # name the output line the doctest shows
        line += example.parsed.source.count("\n")
    return f"{label(example, line)}: {text}"
