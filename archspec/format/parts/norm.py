"""A norm (and activation) on its own in the body: where an encoder ends before a decoder
(segmentation-models-pytorch's DenseNet encoder ends at ``features.norm5``, with no activation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archspec.format.parts.base import Box, Shape, StagePart, positions
from archspec.format.parts.vocabulary import (
    INHERIT,
    Activation,
    Inherit,
    Norm,
    check_norm,
    keeps_output,
    norm_act_values,
    norm_name,
    norm_params,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage


class NormPart(StagePart):
    """Norm then activation, keeping the shape; named ``features.norm5`` (then ``norm6``…) as
    torchvision names the final norm, which a classifier head's norm then follows."""

    inputs = frozenset({"signal", "image", "volume", "tabular"})
    numbering = "norm"
    type: Literal["norm"]
    """Tag: a norm and activation."""
    norm: Norm | Inherit = INHERIT
    """The normalisation; ``inherit``: ``defaults.norm``."""
    activation: Activation = "none"
    """Activation after the norm (none after segmentation-models-pytorch's ``norm5``)."""

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        check_norm(self.norm, in_shape[0], in_shape, path)
        return in_shape, norm_params(in_shape[0], self.norm)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        # The norm's input, and the activation's output or input (what the next part reads).
        width = norm_act_values(stage.in_shape[0], self.norm, self.activation)
        width += stage.in_shape[0] if keeps_output(self.activation) else 0
        return width * positions(stage.in_shape), 0

    def box(self, stage: Stage) -> Box:
        activation = "" if self.activation == "none" else f", {self.activation}"
        return Box("norm", f"{norm_name(self.norm)}{activation}", "#eeeeee")

    def depth_widths(self, stage: Stage) -> list[int]:
        return []
