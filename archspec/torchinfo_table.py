"""torchinfo's table of a built network, for the input size its spec declares."""

from __future__ import annotations

import torchinfo
from torch import nn

from archspec.format.schema import Spec
from archspec.format.shapes import input_shape

_MULT_ADDS = "Total mult-adds"
# torchinfo's own steps; its unit label is an enum that Python 3.11+ prints as `Units.GIGABYTES`.
_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"))


def summarise(model: nn.Module, spec: Spec, *, depth: int, batch_size: int) -> str:
    """Run torchinfo on ``model`` in eval mode with a ``(batch_size, *input)`` input."""
    stats = torchinfo.summary(
        model,
        input_size=(batch_size, *input_shape(spec)),
        depth=depth,
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
        mode="eval",
        verbose=0,
        device="cpu",
    )
    lines = str(stats).splitlines()
    return "\n".join(mult_adds_line(stats.total_mult_adds) if line.startswith(_MULT_ADDS) else line
                     for line in lines)


def mult_adds_line(count: int) -> str:
    """``2834161824`` → ``Total mult-adds (G): 2.83``: a metric prefix a person reads."""
    scale, prefix = next(((s, p) for s, p in _PREFIXES if count >= s), _PREFIXES[-1])
    return f"{_MULT_ADDS} ({prefix}): {count / scale:.2f}"
