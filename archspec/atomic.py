"""All-or-nothing output files: written beside the target, renamed over it only on success.

Exports, diagrams and recovered specs share this so that an error, a failed
verification or a signal never leaves a half-written file at the path a user named,
and so that no output ever replaces an input of the same command or a file that is
not a regular file (``/dev/null``, a FIFO). Several outputs of one command are one
transaction (``replacing``): an error after the first is in place rolls it back.
Never imports torch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from archspec import interrupts
from archspec.errors import Problem, SpecError
from archspec.format.paths import file_kind

Named = tuple[str, "str | os.PathLike[str]"]
"""An input of a command and what it is: ``("spec", "specs/x.yaml")``."""

_temporaries: set[Path] = set()  # written now, removed on any way out
_open: list[_Transaction] = []  # transactions not yet committed or rolled back, outermost first


def check_destination(target: str | os.PathLike[str], *, inputs: Iterable[Named] = ()) -> None:
    """Refuse an output path before any long work; see ``check_outputs``."""
    check_outputs([target], inputs=inputs)


def check_outputs(outputs: Sequence[str | os.PathLike[str]], *, inputs: Iterable[Named] = ()) -> None:
    """Refuse output paths that cannot receive a file, or whose file must not be replaced.

    Args:
        outputs: every file one command writes.
        inputs: every file the command reads, with what it is (``("weights", path)``).

    Raises:
        SpecError: an output is a directory or another file that is not a regular one (a
            device, a FIFO, a socket), its directory does not exist, or it resolves to one of
            ``inputs`` or to another output (through ``..``, a symbolic or a hard link).
    """
    inputs = list(inputs)
    for index, output in enumerate(outputs):
        target = Path(output)
        try:
            mode = target.stat().st_mode
        except OSError:
            mode = None  # nothing there (or a dangling link): a new file
        if mode is not None and stat.S_ISDIR(mode):
            raise SpecError(Problem("output path is a directory", file=str(target)))
        if mode is not None and not stat.S_ISREG(mode):
            raise SpecError(Problem(f"output path is {file_kind(mode)}, not a regular file; an output "
                                    "is written to a new path or over a regular file", file=str(target)))
        if not target.parent.is_dir():
            raise SpecError(Problem(f"output directory {str(target.parent)!r} does not exist", file=str(target)))
        if len(os.fsencode(target.name)) + _AFFIXES > _name_max(target.parent):
            raise SpecError(Problem(f"output file name is too long ({len(os.fsencode(target.name))} bytes; "
                                    f"{_name_max(target.parent) - _AFFIXES} at most here)", file=str(target)))
        for what, path in inputs:
            if _same_file(target, Path(path)):
                raise SpecError(Problem(f"output is the {what} {str(path)!r}; an output never replaces "
                                        "an input of the same command", file=str(target)))
        for other in outputs[:index]:
            if _same_file(target, Path(other)):
                raise SpecError(Problem(f"output is also the output {str(other)!r}; each output needs "
                                        "its own file", file=str(target)))


_AFFIXES = len(".") + len(".0123abcd.tmp")
"""What a temporary or a backup adds to an output's name."""


def _name_max(folder: Path) -> int:
    """The longest file name ``folder``'s filesystem takes, in bytes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same place once resolved, or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file beside ``target`` (same filesystem, so the rename is atomic) to write into.

    When the block ends normally the file gets the mode a plain ``open`` would have given
    and replaces ``target``; on any exception, a signal included, it is removed. Inside
    ``replacing``, the rename is undone if the transaction fails later.

    Raises:
        SpecError: the output path is refused by ``check_destination``, its directory is
            not writable, or an ``OSError`` interrupted the writing.
    """
    target = Path(target)
    check_destination(target)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    _temporaries.add(temporary)
    try:
        try:
            temporary.open("xb").close()
        except OSError as error:
            raise SpecError(
                Problem(f"cannot write to {str(target.parent)!r}: {error.strerror}", file=str(target))
            ) from None
        yield temporary
        with interrupts.critical():
            interrupts.check()  # a signal some library swallowed still stops the rename
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, target)
            if not _open:
                interrupts.commit()
    except OSError as error:  # a full disk or a vanished directory, mid-write
        raise SpecError(Problem(f"cannot write the file: {error.strerror}", file=str(target))) from None
    finally:
        with interrupts.critical():
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)  # gone already after a successful rename
            _temporaries.discard(temporary)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` through ``atomic_output``."""
    with atomic_output(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


class _Transaction:
    """Outputs that appear together or not at all: what each target held before, to put back."""

    def __init__(self, targets: list[Path]):
        self.targets = targets
        self.backups: dict[Path, Path | None] = {}  # target → a link to its old file, None if it was new

    def back_up(self) -> None:
        for target in self.targets:
            if not target.exists():
                self.backups[target] = None
                continue
            backup = target.parent / f".{target.name}.{secrets.token_hex(4)}.bak"
            try:
                try:
                    os.link(target, backup)  # instant, whatever the size
                except OSError:  # a filesystem without hard links
                    shutil.copy2(target, backup)
            except OSError as error:
                backup.unlink(missing_ok=True)
                raise SpecError(Problem(f"cannot keep the old file while writing: {error.strerror}",
                                        file=str(target))) from None
            self.backups[target] = backup

    def roll_back(self) -> None:
        for target, backup in self.backups.items():
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(backup, target)

    def discard(self) -> None:
        for backup in self.backups.values():
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()


@contextlib.contextmanager
def replacing(outputs: Sequence[str | os.PathLike[str] | None], *,
              inputs: Iterable[Named] = ()) -> Iterator[None]:
    """Outputs written by the block (each through ``atomic_output``) that all stay or all go.

    The outputs are checked first (``check_outputs``; ``None`` entries are skipped). If the
    block raises, a signal included, every output is put back as it was: a file that
    existed holds its old contents again, a new one is removed.

    Raises:
        SpecError: an output is refused, or an old file cannot be kept aside.
    """
    targets = [Path(output) for output in outputs if output is not None]
    check_outputs(targets, inputs=inputs)
    transaction = _Transaction(targets)
    _open.append(transaction)
    try:
        with interrupts.critical():
            transaction.back_up()
        yield
        with interrupts.critical():
            interrupts.check()
            _open.remove(transaction)
            if not _open:
                interrupts.commit()
            transaction.discard()
    except BaseException:
        with interrupts.critical():
            transaction.roll_back()
        raise
    finally:
        if transaction in _open:
            _open.remove(transaction)


def abandon() -> None:
    """Roll back every open transaction and remove every temporary file: the command's last resort.

    The ``with`` blocks above clean up after themselves; this catches what an exception
    raised inside their own cleanup (a signal at the worst moment) left behind. Called
    once the exit status is decided (``interrupts.exit_status``), when signals are ignored.
    """
    for transaction in reversed(_open):
        transaction.roll_back()
    _open.clear()
    for temporary in list(_temporaries):
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    _temporaries.clear()
