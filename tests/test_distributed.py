"""Training beyond one process: DistributedDataParallel over two gloo processes on the CPU,
started with ``torch.distributed.run``, on dense blocks in their memory-efficient form.

The memory-efficient block is a custom autograd function that hands autograd its layers'
parameter gradients itself; DDP starts its all-reduce from hooks on those gradients. The
test checks that what DDP leaves in ``.grad`` is the mean of the gradients each process
computes alone on its own batch, and that one SGD step leaves every process the same weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from tests import bounded
from tests.conftest import ROOT

WORKER = ROOT / "tests" / "ddp_worker.py"
PROCESSES = 2
CPU_SECONDS = 300  # of each process; a healthy run takes about 15 s on 2 busy cores
LR = 0.1  # tests/ddp_worker.py


def _end_workers(folder: Path) -> None:
    """Kill the worker processes that are still running (each wrote its id), never anything else."""
    for pid_file in folder.glob("rank*.pid"):
        pid = int(pid_file.read_text())
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # already gone
        if b"ddp_worker.py" in command:
            os.kill(pid, signal.SIGKILL)


def _run_workers(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES),
         str(WORKER), str(folder)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = bounded.communicate(process, cpu_seconds=CPU_SECONDS)  # kills torchrun's session
    finally:
        _end_workers(folder)  # they run in sessions of their own: a dead torchrun leaves them
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _largest(tensors: dict[str, torch.Tensor]) -> float:
    return max(float(t.abs().max()) for t in tensors.values())


def test_ddp_gradients_are_the_mean_of_each_process_own(tmp_path: Path) -> None:
    result = _run_workers(tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(PROCESSES)]
    assert [r["world_size"] for r in ranks] == [PROCESSES] * PROCESSES
    # 4 dense blocks and their 16 layers (tutorial.yaml), every one memory-efficient
    assert ranks[0]["memory_efficient"] == [True] * 20

    names = list(ranks[0]["alone"])
    assert len(names) == 84  # the tutorial's parameter tensors
    alone = [r["alone"] for r in ranks]
    # the batches differ, so the mean is not either process's own gradient
    difference = max(float((alone[0][n] - alone[1][n]).abs().max()) for n in names)
    assert difference > 0.01 * _largest(alone[0]), difference

    mean = {n: (alone[0][n] + alone[1][n]) / PROCESSES for n in names}
    scale = _largest(mean)
    for rank, found in enumerate(ranks):
        missing = [n for n in names if found["ddp"][n] is None]
        assert missing == [], f"rank {rank}: no gradient for {missing}"
        worst = max(float((found["ddp"][n] - mean[n]).abs().max()) for n in names)
        assert worst <= 1e-6 * scale, f"rank {rank}: DDP's gradient is {worst / scale:.3g} off the mean"
    # the all-reduce hands every process the same bits
    unequal = [n for n in names if not torch.equal(ranks[0]["ddp"][n], ranks[1]["ddp"][n])]
    assert unequal == []

    # one SGD step: the same weights everywhere, the initial ones moved by lr × the mean gradient
    unequal = [n for n in names if not torch.equal(ranks[0]["stepped"][n], ranks[1]["stepped"][n])]
    assert unequal == []
    assert all(torch.equal(ranks[0]["initial"][n], ranks[1]["initial"][n]) for n in names)
    expected = {n: ranks[0]["initial"][n] - LR * mean[n] for n in names}
    worst = max(float((ranks[0]["stepped"][n] - expected[n]).abs().max()) for n in names)
    assert worst <= 1e-6 * _largest(expected), worst
