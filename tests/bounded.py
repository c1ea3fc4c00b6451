"""Child processes bounded by the work they do, never by the clock.

A busy machine slows a child down without making it use more CPU time, so a limit on the
child's CPU time (RLIMIT_CPU, set on the child and inherited by each process it starts)
fails only a child that really works too long, such as a loop. A child that stops using the
CPU altogether (a deadlock) is found by its lack of progress: the CPU time of its whole
process tree has not grown over STALL_S, which a slowed child, still scheduled, never shows.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

STALL_S = 120.0  # seconds without one tick of CPU in the whole tree: a hang, not a busy machine
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, with the children they have waited for."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the name: state, ppid, ... utime, stime, cutime, cstime are fields 14-17 of stat(5).
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = sum(int(value) for value in fields[11:15]) / _TICK
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += cpu.get(pid, 0.0)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return total


def communicate(process: subprocess.Popen, *, cpu_seconds: int, stall_s: float = STALL_S) -> tuple[str, str]:
    """``process.communicate()`` under a limit of ``cpu_seconds`` of CPU per process, killing its
    session on a stall (see the module's docstring). Start it with ``start_new_session=True``.

    Raises:
        AssertionError: the child ran out of CPU time, or its tree used none for ``stall_s``.
    """
    resource.prlimit(process.pid, resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    try:
        used = -1.0
        while True:
            try:
                outputs = process.communicate(timeout=stall_s)
                break
            except subprocess.TimeoutExpired:
                now = tree_cpu_seconds(process.pid)
                if now <= used:
                    raise AssertionError(
                        f"{process.args!r} used no CPU for {stall_s:.0f} s (at {now:.1f} s of CPU): a hang"
                    ) from None
                used = now
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise AssertionError(f"{process.args!r} ran past its {cpu_seconds} s of CPU time "
                             f"(killed by {signal.Signals(-process.returncode).name})")
    return outputs


def run(args: list[str], *, cpu_seconds: int, stall_s: float = STALL_S, **options) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True, **options)``, bounded by CPU time."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
    process = subprocess.Popen(args, text=True, start_new_session=True, **options)
    stdout, stderr = communicate(process, cpu_seconds=cpu_seconds, stall_s=stall_s)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
