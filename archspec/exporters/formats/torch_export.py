"""``torch.export`` programs (``.pt2``), for AOTInductor and other compilers: written with
``torch.export.save``, run back with ``torch.export.load`` (which unpickles: load only files you trust)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.verify import Runner, flatten


def version() -> str:
    return f"torch {torch.__version__}"


def not_runnable() -> str | None:
    return None


def dynamic_shapes(dynamic: Mapping[int, str], max_batch: int | None = None) -> tuple[dict[int, object], ...] | None:
    """``torch.export`` dims for the free axes: each its own, derived guards allowed (``Dim.AUTO``)
    except the batch, which has an upper bound when a runtime plans its memory for it."""
    if not dynamic:
        return None
    dims: dict[int, object] = {axis: torch.export.Dim.AUTO for axis in dynamic}
    if max_batch is not None and 0 in dynamic:
        dims[0] = torch.export.Dim("batch", min=1, max=max_batch)
    return (dims,)


def exported(module: nn.Module, example: torch.Tensor, dynamic: Mapping[int, str],
             max_batch: int | None = None) -> torch.export.ExportedProgram:
    """The module's program: every free axis of ``dynamic`` left free unless the network fixes it."""
    from torch.fx.experimental import _config

    # Size-oblivious: no guard that a free size is not 1. Without it, a tutorial exported at 96×96
    # refused 72×60, where the last feature map is 1 wide ("... // 2 != 1"). With it, MONAI's 3D
    # DenseNet came out guarded against batch 1 (x.size()[0] != 1): that program is made again
    # the usual way, which keeps batch 1 (measured with torch 2.14).
    shapes = dynamic_shapes(dynamic, max_batch)
    with _config.patch(backed_size_oblivious=True):
        program = torch.export.export(module, (example,), dynamic_shapes=shapes, strict=False)
    if 0 not in dynamic or _takes_batch_one(program, example):
        return program
    return torch.export.export(module, (example,), dynamic_shapes=shapes, strict=False)


def _takes_batch_one(program: torch.export.ExportedProgram, example: torch.Tensor) -> bool:
    """Whether the program's input guards admit a batch of one."""
    try:
        program.module()(example[:1])
    except (RuntimeError, AssertionError) as error:  # the guard's failure, raised before any kernel runs
        return "Guard failed" not in str(error)
    return True


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    program = exported(module, example, dynamic)
    torch.export.save(program, str(out))
    return input_dims(program, dynamic)


def input_dims(program: torch.export.ExportedProgram, dynamic: Mapping[int, str]) -> tuple[int | str, ...]:
    """The program's input shape: a name where the axis stayed free, the size where it was fixed."""
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder"
                       and node.name in program.graph_signature.user_inputs)
    shape = placeholder.meta["val"].shape
    return tuple(dynamic.get(axis, "?") if not isinstance(size, int) else size
                 for axis, size in enumerate(shape))


def runner(path: Path, *, precision: str) -> Runner:
    module = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [value for _, value in flatten(module(torch.from_numpy(x)))]

    return run
