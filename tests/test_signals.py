"""SIGINT, SIGTERM and SIGHUP at every moment of a command: exit 130, 143 or 129 with one line
and no new file, or exit 0 with every output complete (archspec/interrupts.py).

Each child is a real ``python -m archspec`` (or the console script). The test sends its
signal once it has seen the child reach the moment under test, never after a sleep: while
the package imports (``-X importtime`` prints each module as it is imported), while the
export's temporary file exists (polled), or at a pause a hook puts in the child at one
exact point (the ONNX file written but not renamed, the ONNX file in place while the report
is written, everything committed). Every child is killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import archspec
from tests import bounded
from tests.conftest import ROOT

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
MESSAGE = {signal.SIGINT: "interrupted", signal.SIGTERM: "interrupted (SIGTERM)",
           signal.SIGHUP: "interrupted (SIGHUP)"}

# The command, run through its real entry (runpy, as python -m does) with one pause added:
# when the output named PAUSE_AT has been written in full, before it is renamed into place
# (or, for "committed", once every output is in place), the child writes READY and waits.
# interrupts.install() is what archspec/__init__.py does when the process is the command.
_PAUSED = """
import contextlib, runpy, sys, time
from pathlib import Path
from archspec import atomic, interrupts
interrupts.install()
pause_at, ready = sys.argv[1], Path(sys.argv[2])

def wait():
    ready.write_text("ready")
    while interrupts.received() is None:
        time.sleep(0.01)  # a signal before the commit raises here; after it, the command goes on

real = atomic.atomic_output

@contextlib.contextmanager
def paused(target):
    with real(target) as temporary:
        yield temporary
        if Path(target).name == pause_at:
            wait()

atomic.atomic_output = paused
if pause_at == "committed":
    import archspec.cli.export as export
    echo = export._echo_report
    export._echo_report = lambda report: (wait(), echo(report))
sys.argv = ["archspec", *sys.argv[3:]]
runpy.run_module("archspec", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding only the spec: after an interrupt it must hold only that."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(TUTORIAL, work / "t.yaml")
    return work


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    resource.prlimit(process.pid, resource.RLIMIT_CPU, (300, 301))  # a loop cannot run on
    return process


def _wait_for(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    """Poll until ``ready()``; fail if the child ends first or its CPU time stops growing (a hang)."""
    used, checked = -1.0, time.monotonic()
    while not ready():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"the child ended ({process.returncode}) before the moment under test:\n"
                                 f"{stdout}{stderr}")
        if time.monotonic() - checked > bounded.STALL_S:
            now = bounded.tree_cpu_seconds(process.pid)
            assert now > used, "the child used no CPU while the test waited for it: a hang"
            used, checked = now, time.monotonic()
        time.sleep(0.005)


def _finish(process: subprocess.Popen) -> tuple[str, str]:
    return bounded.communicate(process, cpu_seconds=300)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _assert_interrupted(process: subprocess.Popen, number: int, stderr: str) -> None:
    assert process.returncode == STATUS[number], stderr
    assert stderr.splitlines()[-1] == MESSAGE[number], stderr
    assert "Traceback" not in stderr, stderr


# ---- while the package imports: the handlers are in place before pydantic -----------------------


def _entry_points() -> list[list[str]]:
    script = Path(sys.executable).parent / "archspec"  # the console script, where installed
    return [[sys.executable, "-X", "importtime", "-m", "archspec"],
            *([[sys.executable, "-X", "importtime", str(script)]] if script.is_file() else [])]


@pytest.mark.parametrize("number", list(STATUS), ids=lambda number: signal.Signals(number).name)
@pytest.mark.parametrize("entry", _entry_points(), ids=["python -m", "console script"][:len(_entry_points())])
def test_signal_while_importing(folder, entry, number):
    process = _start([*entry, "export", "t.yaml", "--onnx", "t.onnx", "--no-verify"], folder)
    try:
        seen = []
        for line in process.stderr:  # -X importtime: one line per module, as each finishes importing
            seen.append(line)
            if line.split("|")[-1].strip() == "pydantic":  # imported by archspec/__init__.py, after the handlers
                break
        else:
            raise AssertionError("the child never imported pydantic:\n" + "".join(seen))
        process.send_signal(number)
        _, stderr = _finish(process)
        _assert_interrupted(process, number, stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["t.yaml"]
    finally:
        _kill(process)


# ---- mid-export: the temporary file exists -----------------------------------------------------


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_while_the_temporary_file_exists(folder, number):
    """Before, SIGTERM and SIGHUP killed the process and left ``.t.onnx.XXXX.tmp`` behind."""
    process = _start([sys.executable, "-m", "archspec", "export", "t.yaml", "--onnx", "t.onnx",
                      "--provider", "cpu"], folder)
    try:
        _wait_for(process, lambda: any(p.name.startswith(".t.onnx.") for p in folder.iterdir()))
        process.send_signal(number)
        _, stderr = _finish(process)
        _assert_interrupted(process, number, stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["t.yaml"]
    finally:
        _kill(process)


# ---- at exact points, through the hook --------------------------------------------------------


def _paused(folder: Path, pause_at: str, *args: str) -> tuple[subprocess.Popen, Path]:
    ready = folder.parent / "ready"
    return _start([sys.executable, "-c", _PAUSED, pause_at, str(ready), *args], folder), ready


def test_three_signals_with_the_onnx_file_written_but_not_renamed(folder):
    """The last moment before the rename; later signals (a SIGTERM, a second Ctrl-C) change nothing."""
    process, ready = _paused(folder, "t.onnx", "export", "t.yaml", "--onnx", "t.onnx", "--no-verify")
    try:
        _wait_for(process, ready.exists)
        (temporary,) = [p for p in folder.iterdir() if p.name.startswith(".t.onnx.")]
        assert temporary.stat().st_size > 1_000_000  # written in full: 3.1 MB of weights
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        _, stderr = _finish(process)
        _assert_interrupted(process, signal.SIGINT, stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["t.yaml"]
    finally:
        _kill(process)


def test_sigterm_with_the_onnx_file_in_place_while_the_report_is_written(folder):
    """The ONNX file is already at its path: the signal takes it away again."""
    process, ready = _paused(folder, "r.json", "export", "t.yaml", "--onnx", "t.onnx", "--report", "r.json",
                             "--no-verify")
    try:
        _wait_for(process, ready.exists)
        assert (folder / "t.onnx").is_file()
        process.send_signal(signal.SIGTERM)
        _, stderr = _finish(process)
        _assert_interrupted(process, signal.SIGTERM, stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["t.yaml"]
    finally:
        _kill(process)


def test_signal_after_every_output_is_committed_exits_0(folder):
    """Too late to undo: the command prints its lines and exits 0, its outputs complete."""
    import onnx

    process, ready = _paused(folder, "committed", "export", "t.yaml", "--onnx", "t.onnx", "--report", "r.json",
                             "--no-verify")
    try:
        _wait_for(process, ready.exists)
        process.send_signal(signal.SIGINT)
        stdout, stderr = _finish(process)
        assert (process.returncode, stderr) == (0, "")
        assert stdout.startswith("wrote t.onnx: 3.1 MB, 758,226 parameters")
        assert sorted(p.name for p in folder.iterdir()) == ["r.json", "t.onnx", "t.yaml"]
        assert json.loads((folder / "r.json").read_text())["params"] == 758_226  # the tutorial's count
        onnx.checker.check_model(str(folder / "t.onnx"))
    finally:
        _kill(process)


def test_sigterm_while_from_weights_writes_the_spec(folder):
    """Before, SIGTERM left the temporary YAML behind."""
    torch.save(archspec.build(TUTORIAL).state_dict(), folder / "w.pt")
    process, ready = _paused(folder, "out.yaml", "from-weights", "w.pt", "-o", "out.yaml")
    try:
        _wait_for(process, ready.exists)
        assert any(p.name.startswith(".out.yaml.") for p in folder.iterdir())
        process.send_signal(signal.SIGTERM)
        _, stderr = _finish(process)
        _assert_interrupted(process, signal.SIGTERM, stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["t.yaml", "w.pt"]
    finally:
        _kill(process)


def test_a_library_user_keeps_its_own_handlers():
    """Only the command installs handlers: a library user's Ctrl-C and SIGTERM stay as Python and they set them."""
    done = bounded.run([sys.executable, "-c", "import signal, archspec; print(signal.getsignal(signal.SIGINT).__name__, "
                        "signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, archspec.command_started())"], cpu_seconds=60, cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, "default_int_handler True False\n"), done.stderr
