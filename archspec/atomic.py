"""All-or-nothing output files: written beside the target, renamed over it only on success.

Exports and diagrams share this so that an error, a failed verification or Ctrl-C
never leaves a half-written file at the path a user named. Never imports torch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from archspec.errors import Problem, SpecError


def check_destination(target: Path) -> None:
    """Refuse an output path that cannot receive a file, before any long work.

    Raises:
        SpecError: the path is a directory, or its directory does not exist.
    """
    if target.is_dir():
        raise SpecError(Problem("output path is a directory", file=str(target)))
    if not target.parent.is_dir():
        raise SpecError(Problem(f"output directory {str(target.parent)!r} does not exist", file=str(target)))


@contextlib.contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """A temporary file beside ``target`` (same filesystem, so the rename is atomic) to write into.

    When the block ends normally the file gets the mode a plain ``open`` would have given
    and replaces ``target``; on any exception, Ctrl-C included, it is removed.

    Raises:
        SpecError: the output path is unusable, its directory is not writable, or an
            ``OSError`` interrupted the writing.
    """
    target = Path(target)
    check_destination(target)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        temporary.open("xb").close()
    except OSError as error:
        raise SpecError(
            Problem(f"cannot write to {str(target.parent)!r}: {error.strerror}", file=str(target))
        ) from None
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except OSError as error:  # a full disk or a vanished directory, mid-write
        raise SpecError(Problem(f"cannot write the file: {error.strerror}", file=str(target))) from None
    finally:
        temporary.unlink(missing_ok=True)  # gone already after a successful rename
