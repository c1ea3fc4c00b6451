"""One process of tests/test_distributed.py, started by ``python -m torch.distributed.run``.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT``

Each process builds the tutorial network with memory-efficient dense blocks at 32×32,
computes the gradient of its own batch twice — alone, and through
``DistributedDataParallel`` over gloo — takes one SGD step with the latter, and saves
both gradients and the stepped weights to ``OUT/rank{RANK}.pt``. Its process id goes
to ``OUT/rank{RANK}.pid`` first, so that the test can end it if the run hangs.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import archspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "tutorial.yaml"
# 32×32: the stem leaves 8×8, and the three transitions 4×4, 2×2 and 1×1.
OVERRIDES = ("defaults.memory_efficient=true", "input.height=32", "input.width=32")
BATCH = 4  # per process; BatchNorm normalises over each process's own batch (no SyncBatchNorm)
LR = 0.1


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.pid").write_text(str(os.getpid()))
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # the same initial weights everywhere, as DDP would broadcast them anyway
    model = archspec.build(SPEC, overrides=OVERRIDES)
    alone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(100 + rank)  # each process its own batch
    x = torch.randn(BATCH, 1, 32, 32, generator=generator)  # (N, C, H, W)
    y = torch.randint(0, 10, (BATCH,), generator=generator)

    F.cross_entropy(alone(x), y).backward()

    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
    F.cross_entropy(ddp(x), y).backward()
    ddp_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()

    torch.save({
        "world_size": dist.get_world_size(),
        "memory_efficient": [m.memory_efficient for m in model.modules() if hasattr(m, "memory_efficient")],
        "initial": {name: p.detach() for name, p in alone.named_parameters()},
        "alone": {name: p.grad for name, p in alone.named_parameters()},
        "ddp": ddp_grads,
        "stepped": {name: p.detach() for name, p in model.named_parameters()},
    }, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
