"""The convolutional stem: torchvision's ``conv0``, ``norm0``, ``relu0``, ``pool0``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from archspec.format.parts.base import (
    INDEX_VALUES,
    Box,
    Shape,
    StagePart,
    linear_params,
    norm_params,
    spatial,
    values,
    window,
)
from archspec.format.parts.vocabulary import Activation, Norm

if TYPE_CHECKING:
    from archspec.format.shapes import Stage


class ConvStem(StagePart):
    """Convolution, optional norm and activation, optional max pool (torchvision's ``conv0``…``pool0``)."""

    inputs = frozenset({"image"})
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
    norm: Norm = "batch_norm"
    """Normalisation after the stem convolution."""
    activation: Activation = "relu"
    """Activation after the normalisation."""
    pool: Literal["max", "none"] = "max"
    """Pooling at the end of the stem."""
    pool_kernel_size: PositiveInt = 3
    """Kernel size of the stem max pool."""
    pool_stride: PositiveInt = 2
    """Stride of the stem max pool."""
    pool_padding: Annotated[int, Field(ge=0)] = 1
    """Padding of the stem max pool."""

    @model_validator(mode="after")
    def _padding_fits_kernels(self) -> ConvStem:
        # PyTorch refuses padding greater than half the kernel for pooling.
        if self.pool == "max" and self.pool_padding > self.pool_kernel_size // 2:
            raise ValueError(
                f"pool_padding must be at most half of pool_kernel_size "
                f"({self.pool_kernel_size // 2}), got {self.pool_padding}"
            )
        return self

    def _conv_shape(self, in_shape: Shape) -> Shape:
        sizes = (window(size, self.kernel_size, self.stride, self.padding) for size in in_shape[1:])
        return (self.out_channels, *sizes)

    def infer(self, in_shape: Shape, path: str) -> tuple[Shape, int]:
        params = linear_params(in_shape[0], self.out_channels, self.bias, self.kernel_size)
        params += norm_params(self.out_channels, self.norm)
        out = spatial(path, in_shape, self._conv_shape(in_shape))
        if self.pool == "max":
            pooled = (window(size, self.pool_kernel_size, self.pool_stride, self.pool_padding) for size in out[1:])
            out = spatial(path, out, (out[0], *pooled))
        return out, params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None, shared_input: bool) -> tuple[int, int]:
        conv_out = values(self._conv_shape(stage.in_shape))  # larger than the output when pooled
        stored = values(stage.in_shape)  # the convolution saves the input batch
        stored += conv_out if self.norm == "batch_norm" else 0  # BatchNorm saves its input
        if self.pool == "max":
            stored += conv_out + INDEX_VALUES * values(stage.out_shape)  # pool input and indices
        elif self.activation == "relu":
            stored += conv_out
        return stored, 0

    def saves_output(self) -> bool:
        return self.pool == "none" and self.activation == "relu"

    def box(self, stage: Stage) -> Box:
        pool = ", max pool" if self.pool == "max" else ""
        return Box("stem", f"conv {self.kernel_size}×{self.kernel_size}/{self.stride}{pool}", "#d8e2f0")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
