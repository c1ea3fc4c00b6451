"""The U-Net decoder block as segmentation-models-pytorch builds it: upsample, concatenate the
skip, then two convolution-norm-activation layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from archspec.format.parts.base import At, Box, Shape, StagePart, linear_params, positions, spatial_dims
from archspec.format.parts.vocabulary import (
    Activation,
    INHERIT,
    Inherit,
    Norm,
    OddKernel,
    check_norm,
    norm_act_values,
    norm_name,
    norm_params,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

CONVS = 2  # segmentation-models-pytorch's conv1 and conv2


class UNetBlock(StagePart):
    """Upsampling to the skip's size (× ``scale`` without a skip), ``cat([input, skip])``, then
    ``conv1`` and ``conv2``: each a ``kernel_size`` convolution (a bias only without a norm),
    norm and activation. Modules are named as in segmentation-models-pytorch's ``UnetDecoderBlock``."""

    inputs = frozenset({"signal", "image", "volume"})
    type: Literal["unet_block"]
    """Tag: a U-Net decoder block."""
    skip: At | None = None
    """The encoder map it concatenates (``body[5].activation``); ``null`` for a block without one."""
    out_channels: PositiveInt
    """Channels of both convolutions (segmentation-models-pytorch's ``decoder_channels``)."""
    mode: Literal["nearest", "linear"] = "nearest"
    """Interpolation of the upsampling (``linear``: bi/trilinear, ``align_corners: false``)."""
    scale: PositiveInt = 2
    """Upsampling factor when there is no skip to match."""
    kernel_size: OddKernel = 3
    """Kernel of both convolutions (odd: padding keeps the size)."""
    norm: Norm | Inherit = INHERIT
    """Normalisation after each convolution; ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation after each normalisation; ``inherit``: ``defaults.activation``."""

    def reads(self) -> tuple[str, ...]:
        return () if self.skip is None else (self.skip,)

    def layer_kind(self) -> str | None:
        return "conv"

    @property
    def bias(self) -> bool:
        """Whether the convolutions have a bias: only without a norm to follow them."""
        return norm_name(self.norm) == "none"

    def _upsampled(self, in_shape: Shape, skips: tuple[Shape, ...]) -> Shape:
        """The concatenation's shape: upsampled input and skip channels, at the skip's size."""
        if not skips:
            return (in_shape[0], *(size * self.scale for size in in_shape[1:]))
        (skip,) = skips
        return (in_shape[0] + skip[0], *skip[1:])

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        joined = self._upsampled(in_shape, skips)
        dims = spatial_dims(in_shape)
        out = (self.out_channels, *joined[1:])
        check_norm(self.norm, self.out_channels, out, path)
        params = linear_params(joined[0], self.out_channels, self.bias, self.kernel_size, dims)
        params += linear_params(self.out_channels, self.out_channels, self.bias, self.kernel_size, dims)
        return out, params + CONVS * norm_params(self.out_channels, self.norm)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        per_position = positions(stage.out_shape)
        joined = self._upsampled(stage.in_shape, stage.skips)[0]
        # conv1 saves the concatenation, conv2 its input; each norm its input and each
        # activation its output or input (the next convolution's input, counted there).
        stored = joined + self.out_channels
        stored += CONVS * norm_act_values(self.out_channels, self.norm, self.activation)
        return (stored + self.out_channels) * per_position, 0

    def box(self, stage: Stage) -> Box:
        return Box("decoder", f"{self.mode} up, 2 conv → {self.out_channels}", "#dce9f5")  # skips drawn as arcs

    def depth_widths(self, stage: Stage) -> list[int]:
        return [self.out_channels] * CONVS
