"""ExecuTorch programs (``.pte``) for phones and embedded devices: the ``torch.export`` program lowered
to the XNNPACK delegate (``to_edge_transform_and_lower``), run by ExecuTorch's own runtime.

The batch stays free up to the larger verification batch (``--batch-size``): ExecuTorch plans its
memory for the largest shape, so the bound is part of the file. Spatial sizes are fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.torch_export import exported
from archspec.exporters.formats.verify import Runner, flatten


def version() -> str:
    from importlib.metadata import version as installed

    return f"executorch {installed('executorch')}"


def not_runnable() -> str | None:
    return None


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = exported(module, example, dynamic, max_batch=max_batch)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    out.write_bytes(lowered.buffer)
    return tuple(f"{dynamic[axis]} ≤ {max_batch}" if axis in dynamic else size
                 for axis, size in enumerate(example.shape))


def runner(path: Path, *, precision: str) -> Runner:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [value for _, value in flatten(list(method.execute([torch.from_numpy(x)])))]

    return run
