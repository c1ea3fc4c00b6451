"""The MLP stem for tabular input: ``linear0``, ``relu0``, ``linear1``…"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Shape, StagePart, linear_params
from archspec.format.parts.vocabulary import Activation

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

MAX_HIDDEN = 64
"""Hidden layers one stem may have: bounds the loops over them before they run."""


class MLPStem(StagePart):
    """A stack of Linear-activation layers for tabular input."""

    inputs = frozenset({"tabular"})
    type: Literal["mlp_stem"]
    """Tag: a multi-layer perceptron stem."""
    hidden: Annotated[list[PositiveInt], Field(min_length=1, max_length=MAX_HIDDEN)]
    """Widths of the hidden layers, in order (seed 001: ``[512, 1024]``)."""
    activation: Activation = "relu"
    """Activation after each linear layer."""
    bias: bool = True
    """Whether the linear layers have a bias."""

    def infer(self, in_shape: Shape, path: str) -> tuple[Shape, int]:
        widths = [in_shape[0], *self.hidden]
        return (widths[-1],), sum(linear_params(a, b, self.bias) for a, b in zip(widths, widths[1:]))

    def stored_activations(self, stage: Stage, memory_efficient: bool | None, shared_input: bool) -> tuple[int, int]:
        # Each Linear saves its input; each in-place ReLU saves its output (the next input).
        relu = stage.out_shape[0] if self.activation == "relu" else 0
        return stage.in_shape[0] + sum(self.hidden[:-1]) + relu, 0

    def saves_output(self) -> bool:
        return self.activation == "relu"

    def box(self, stage: Stage) -> Box:
        return Box("stem", "linear " + "-".join(str(width) for width in self.hidden), "#d8e2f0")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
