"""The single-convolution stem: torchvision's ``conv0``, ``norm0``, ``relu0``, ``pool0``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Shape, linear_params, spatial, spatial_dims, values, window
from archspec.format.parts.stem_pool import PooledStem
from archspec.format.parts.vocabulary import check_norm, norm_act_values, norm_params

if TYPE_CHECKING:
    from archspec.format.shapes import Stage


class ConvStem(PooledStem):
    """Convolution, norm and activation, then pooling (torchvision's ``conv0``…``pool0``)."""

    type: Literal["conv_stem"]
    """Tag: a convolutional stem."""
    out_channels: PositiveInt = 64
    """Channels produced by the stem convolution (torchvision's ``num_init_features``)."""
    kernel_size: PositiveInt = 7
    """Kernel size of the stem convolution."""
    stride: PositiveInt = 2
    """Stride of the stem convolution."""
    padding: Annotated[int, Field(ge=0)] = 3
    """Zero padding of the stem convolution."""
    bias: bool = False
    """Whether the stem convolution has a bias."""

    def unpooled(self, in_shape: Shape) -> Shape:
        return self._conv_shape(in_shape)

    def _conv_shape(self, in_shape: Shape) -> Shape:
        sizes = (window(size, self.kernel_size, self.stride, self.padding) for size in in_shape[1:])
        return (self.out_channels, *sizes)

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        params = linear_params(in_shape[0], self.out_channels, self.bias, self.kernel_size, spatial_dims(in_shape))
        params += norm_params(self.out_channels, self.norm)
        out = spatial(path, in_shape, self._conv_shape(in_shape))
        check_norm(self.norm, self.out_channels, out, path)
        return spatial(path, out, self.pooled(out, path)), params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        conv_out = self._conv_shape(stage.in_shape)  # larger than the output when pooled
        stored = values(stage.in_shape)  # the convolution saves the input batch
        stored += norm_act_values(values(conv_out), self.norm, self.activation)
        stored += self.pool_activations(conv_out, stage.out_shape)
        return self.activations_in_mode(stage, memory_efficient, stored)

    def box(self, stage: Stage) -> Box:
        kernel = "×".join([str(self.kernel_size)] * spatial_dims(stage.in_shape))
        return Box("stem", f"conv {kernel}/{self.stride}{self.pool_label()}", "#d8e2f0")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
