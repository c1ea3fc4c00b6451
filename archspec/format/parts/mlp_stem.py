"""The MLP stem for tabular input: ``linear0``, ``relu0``, ``linear1``…"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Shape, StagePart, linear_params
from archspec.format.parts.vocabulary import INHERIT, Activation, Inherit, keeps_output

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
    activation: Activation | Inherit = INHERIT
    """Activation after each linear layer; ``inherit``: ``defaults.activation``."""
    bias: bool = True
    """Whether the linear layers have a bias."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout probability after each hidden layer's activation (training only)."""

    def layer_kind(self) -> str | None:
        return "linear"

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        widths = [in_shape[0], *self.hidden]
        return (widths[-1],), sum(linear_params(a, b, self.bias) for a, b in zip(widths, widths[1:]))

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        # Each Linear saves its input; each in-place activation saves its output (the next
        # input); a non-in-place one its input as well; dropout a mask per hidden value.
        kept = stage.out_shape[0] if keeps_output(self.activation) else 0
        copies = 0 if keeps_output(self.activation) or self.activation == "none" else sum(self.hidden)
        masks = sum(self.hidden) if self.drop_rate > 0 else 0
        return stage.in_shape[0] + sum(self.hidden[:-1]) + kept + copies + masks, 0


    def box(self, stage: Stage) -> Box:
        return Box("stem", "linear " + "-".join(str(width) for width in self.hidden), "#d8e2f0")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
