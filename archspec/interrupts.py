"""SIGINT, SIGTERM and SIGHUP in the ``archspec`` command: exit 128+N, one line, no stray file.

A command ends one of two ways: exit 0 with every output complete, or a non-zero
exit with no new output. A signal before the outputs are committed unwinds the
command (its temporary files are removed on the way) and exits 130, 143 or 129; a
signal while files are being renamed into place waits for the renames to finish
and then rolls them back; a signal once every output is committed is too late to
undo anything, so the command finishes its last lines and exits 0. A second signal
never cuts the first one's cleanup short.

The command's handlers are installed by ``archspec/__init__.py`` before it imports
anything heavy, so a Ctrl-C while the package imports ends the same way (it has
nothing to clean up then, so the process exits at once). A program that imports
archspec as a library keeps its own signal handling: nothing here is installed.

Standard library only: this module is imported first of all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""The signals that end a command as an interrupt (SIGHUP does not exist on Windows)."""

_installed = False
_running = False  # the command's code runs: unwind it; before that, nothing to clean up
_exiting = False  # the exit status is decided: later signals change nothing
_received: int | None = None  # the first signal; its number sets the exit status
_critical = 0  # depth of sections a signal must not cut short (renames, rollbacks)
_committed = False  # every output is in place: a signal now is too late to undo them


class Interrupted(KeyboardInterrupt):
    """The command was interrupted by a signal; ``number`` is the signal's."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.number = number


def _handle(number: int, frame: object) -> None:
    """The one handler of every signal in ``SIGNALS``."""
    global _received
    if _received is not None or _exiting:
        return  # a second signal: the first one's cleanup is under way and must finish
    _received = number
    if not _running:  # importing or parsing arguments: no file exists yet
        os.write(2, (message(number) + "\n").encode())
        os._exit(128 + number)
    if _critical or _committed:
        return  # raised when the critical section ends; ignored once committed
    raise Interrupted(number)


def message(number: int) -> str:
    """The line a command prints when a signal ends it."""
    return "interrupted" if number == signal.SIGINT else f"interrupted ({signal.Signals(number).name})"


def install() -> None:
    """Make this process's SIGINT, SIGTERM and SIGHUP end it as described above (main thread only)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handle)
    _installed = True


def is_command() -> bool:
    """Whether this process is the ``archspec`` command: ``python -m archspec`` or the console script."""
    argv = sys.argv
    if argv and argv[0] == "-m":  # python -m archspec: the package imports while the module is located
        original = list(getattr(sys, "orig_argv", ()))
        module = original[original.index("-m") + 1] if "-m" in original[:-1] else ""
        return module == "archspec" or module.startswith("archspec.")
    script = argv[0] if argv else ""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return (os.path.basename(script).removesuffix(".exe") == "archspec"
            and main is not None and os.path.abspath(main) == os.path.abspath(script))


def install_if_command() -> None:
    """``install()`` when this process is the command; a library user's handlers stay as they are."""
    if not _installed and is_command():
        install()


def installed() -> bool:
    """Whether ``install()`` ran in this process."""
    return _installed


def start() -> None:
    """The command's own code begins: from here a signal unwinds it instead of exiting at once."""
    global _running
    _running = True


def received() -> int | None:
    """The first signal this process received, if any (only with ``install()``)."""
    return _received


def check() -> None:
    """Raise ``Interrupted`` if a signal arrived and was swallowed on the way (a library that caught it)."""
    if _running and _received is not None and not _committed:
        raise Interrupted(_received)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section a signal must not cut short: the signal is handled when it ends."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
    if not _critical:
        check()


def commit() -> None:
    """Every output is in place: a signal from now on cannot undo them, so the command exits 0."""
    global _committed
    if _running:
        _committed = True


def exit_status(status: int) -> int:
    """The command's exit status: ``128 + N`` if signal N ended it before it committed, else ``status``.

    Prints the interrupt's one line when a signal decides the status. Later signals are ignored,
    also while the interpreter shuts down (torch's and onnxruntime's teardown takes a while):
    Python puts back the default action of a signal it handled at the end of its shutdown,
    which would end a finished command by the signal, but leaves an ignored one ignored.
    """
    global _exiting
    _exiting = True
    if _installed and threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
    if _received is None or _committed:
        return status
    sys.stderr.write(message(_received) + "\n")
    sys.stderr.flush()
    return 128 + _received
