"""tests/bounded.py fails a child by the work it does: too much CPU, or none at all (a hang)."""

from __future__ import annotations

import sys

import pytest

from tests import bounded


def test_a_child_within_its_cpu_time_passes_its_output_back() -> None:
    done = bounded.run([sys.executable, "-c", "print(sum(range(10**6)))"], cpu_seconds=30)
    assert (done.returncode, done.stdout) == (0, "499999500000\n")


def test_a_looping_child_is_stopped_by_its_cpu_time() -> None:
    with pytest.raises(AssertionError, match="ran past its 1 s of CPU time"):
        bounded.run([sys.executable, "-c", "while True: pass"], cpu_seconds=1)


def test_a_child_using_no_cpu_is_a_hang() -> None:
    # The child and the shell's child both sleep: the tree's CPU time stops growing.
    with pytest.raises(AssertionError, match="used no CPU for 1 s"):
        bounded.run(["bash", "-c", "sleep 1000; true"], cpu_seconds=30, stall_s=1.0)
