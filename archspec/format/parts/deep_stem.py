"""timm's deep stem: three 3×3 convolutions, each with norm and activation, then pooling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Shape, linear_params, spatial, spatial_dims, values, window
from archspec.format.parts.stem_pool import PooledStem
from archspec.format.parts.vocabulary import check_norm, norm_act_values, norm_params

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

MAX_CONVS = 5
"""Convolutions one deep stem may have: bounds the loops over them, and keeps its norms
(``norm0``…``norm4``) clear of the head's ``norm5``."""


class DeepStem(PooledStem):
    """A stack of small convolutions (the first strided), each followed by norm and activation,
    then pooling: timm's ``deep`` stem is ``[k, k, 2k]``, ``deep_tiered`` ``[3k/4, 6k/4, 2k]``
    for growth rate ``k``. Modules are ``conv0``, ``norm0``, ``conv1``… as in timm."""

    type: Literal["deep_stem"]
    """Tag: a deep convolutional stem."""
    widths: Annotated[list[PositiveInt], Field(min_length=2, max_length=MAX_CONVS)]
    """Output channels of each convolution; the last is the stem's width (timm densenetblur121d:
    ``[32, 32, 64]``)."""
    kernel_size: PositiveInt = 3
    """Kernel size of every stem convolution."""
    stride: PositiveInt = 2
    """Stride of the first convolution (the others have stride 1)."""
    padding: Annotated[int, Field(ge=0)] = 1
    """Zero padding of every stem convolution."""
    bias: bool = False
    """Whether the stem convolutions have a bias."""

    def unpooled(self, in_shape: Shape) -> Shape:
        return self._conv_shapes(in_shape)[-1]

    def _conv_shapes(self, in_shape: Shape) -> list[Shape]:
        """Output shape of each convolution."""
        shapes = []
        sizes = in_shape[1:]
        for index, width in enumerate(self.widths):
            stride = self.stride if index == 0 else 1
            sizes = tuple(window(size, self.kernel_size, stride, self.padding) for size in sizes)
            shapes.append((width, *sizes))
        return shapes

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        dims = spatial_dims(in_shape)
        params = 0
        shape = in_shape
        for out in self._conv_shapes(in_shape):
            params += linear_params(shape[0], out[0], self.bias, self.kernel_size, dims)
            params += norm_params(out[0], self.norm)
            shape = spatial(path, shape, out)
            check_norm(self.norm, out[0], out, path)
        return spatial(path, shape, self.pooled(shape, path)), params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        shapes = self._conv_shapes(stage.in_shape)
        stored = sum(values(shape) for shape in [stage.in_shape, *shapes[:-1]])  # each conv's input
        stored += sum(norm_act_values(values(shape), self.norm, self.activation) for shape in shapes)
        stored += self.pool_activations(shapes[-1], stage.out_shape)
        return self.activations_in_mode(stage, memory_efficient, stored)

    def box(self, stage: Stage) -> Box:
        widths = "-".join(str(width) for width in self.widths)
        return Box("stem", f"deep {widths}{self.pool_label()}", "#d8e2f0")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
