"""torchinfo's table of a built network, for the input size its spec declares."""

from __future__ import annotations

import torchinfo
from torch import nn

from archspec.format.schema import Spec
from archspec.format.shapes import input_shape


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
    return str(stats)
