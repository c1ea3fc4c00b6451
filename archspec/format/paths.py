"""Paths: dotted field paths (``("body", 2, "num_layers")`` ⇄ ``body[2].num_layers``), and the
kind of file a path names, refused before it is opened when it is not a regular file.

Never imports torch: the spec reader, the weights reader and the exporters all use it.
"""

from __future__ import annotations

import os
import re
import stat

from archspec.errors import Problem, SpecError

Step = str | int
Loc = tuple[Step, ...]

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def dotted(loc: Loc | list[Step]) -> str:
    """``("body", 2, "num_layers")`` → ``body[2].num_layers``."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def parse_dotted(text: str) -> Loc | None:
    """``body[2].num_layers`` → ``("body", 2, "num_layers")``; ``None`` if it is not a path."""
    steps: list[Step] = []
    position = 0
    for match in _STEP.finditer(text):
        separator = text[position : match.start()]
        named = match.group(1) is not None
        if separator not in ("", ".") or (separator == ".") != (named and bool(steps)):
            return None
        steps.append(match.group(1) if named else int(match.group(2)))
        position = match.end()
    if not steps or position != len(text) or isinstance(steps[0], int):
        return None
    return tuple(steps)


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISREG, "a regular file"),
)


def file_kind(mode: int) -> str:
    """``st_mode`` in words: ``a FIFO (named pipe)``, ``a character device``, ``a regular file``…"""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def check_input_file(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """Refuse an input path that does not name a readable regular file, before anything opens it.

    Opening a FIFO blocks until a writer comes, and reading a device (``/dev/zero``) never
    ends, so the kind is read from ``stat`` first and only a regular file gets through.

    Args:
        path: the file a command is about to read (a spec, an ``extends`` base, weights,
            calibration inputs).
        what: what the file is, for the message: ``spec``, ``weights file``…

    Returns:
        The file's ``stat`` (symbolic links followed), for callers that check size or identity.

    Raises:
        SpecError: ``FILE: cannot read WHAT: REASON``, the reason one of ``No such file or
            directory``, ``Permission denied``, ``a directory``, ``a FIFO (named pipe), not a
            regular file``, ``a character device, not a regular file``…
    """
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as error:
        reason = error.strerror or os.strerror(error.errno or 0)
        raise SpecError(Problem(f"cannot read {what}: {reason}", file=shown)) from None
    refuse_special_file(path, what, info)
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(Problem(f"cannot read {what}: a directory", file=shown))
    if not os.access(path, os.R_OK):
        raise SpecError(Problem(f"cannot read {what}: {os.strerror(13)}", file=shown))  # EACCES
    return info


def refuse_special_file(path: str | os.PathLike[str], what: str, info: os.stat_result | None = None) -> None:
    """Refuse a FIFO, a device or a socket before anything opens it; anything else passes.

    For readers that word a missing file or a directory themselves: this only keeps them
    from opening what would block (a FIFO) or never end (``/dev/zero``).

    Raises:
        SpecError: ``FILE: cannot read WHAT: a FIFO (named pipe), not a regular file`` and the like.
    """
    if info is None:
        try:
            info = os.stat(path)
        except OSError:
            return  # missing or unreadable: the reader says so in its own words
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise SpecError(Problem(f"cannot read {what}: {file_kind(info.st_mode)}, not a regular file",
                                file=os.fspath(path)))
