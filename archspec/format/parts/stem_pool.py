"""What the convolutional stems share: the pooling at their end and its rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field, PositiveInt, model_validator

from archspec.format.parts.base import INDEX_VALUES, Shape, StagePart, values, window
from archspec.format.parts.vocabulary import (
    BLUR_TAPS,
    INHERIT,
    Activation,
    Inherit,
    Norm,
    PoolKind,
    check_blur,
    keeps_output,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage


class PooledStem(StagePart):
    """Base of the convolutional stems: the pool that ends them (torchvision's ``pool0``)."""

    inputs = frozenset({"signal", "image", "volume"})
    points: ClassVar[dict[str, str]] = {
        "activation": "after the last convolution's norm and activation, before the pool "
                      "(timm's and segmentation-models-pytorch's first feature)",
    }
    feature_point = "activation"
    norm: Norm | Inherit = INHERIT
    """Normalisation after each stem convolution; ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation after each normalisation; ``inherit``: ``defaults.activation``."""
    memory_efficient: bool | Inherit = INHERIT
    """Keep only the stem's input for backward and recompute the rest there (its maps are the
    network's largest); ``inherit``: ``defaults.memory_efficient``."""
    pool: PoolKind = "max"
    """Pooling at the end of the stem: ``max``, ``avg``, ``blur`` (timm's anti-aliased pool: a
    stride-1 max pool, then a [1, 2, 1] binomial blur with stride ``pool_stride``) or ``none``."""
    pool_kernel_size: PositiveInt = 3
    """Kernel size of the stem pool (of the max pool before the blur, for ``blur``)."""
    pool_stride: PositiveInt = 2
    """Stride of the stem pool (of the blur, for ``blur``)."""
    pool_padding: Annotated[int, Field(ge=0)] = 1
    """Padding of the stem pool."""

    @model_validator(mode="after")
    def _padding_fits_kernels(self) -> PooledStem:
        # PyTorch refuses padding greater than half the kernel for pooling.
        if self.pool != "none" and self.pool_padding > self.pool_kernel_size // 2:
            raise ValueError(
                f"pool_padding must be at most half of pool_kernel_size "
                f"({self.pool_kernel_size // 2}), got {self.pool_padding}"
            )
        return self

    def unpooled(self, in_shape: Shape) -> Shape:
        """Shape of one sample after the last convolution, before the pool."""
        raise NotImplementedError

    def layer_kind(self) -> str | None:
        return "conv"

    def point_shape(self, point: str, stage: Stage) -> Shape:
        return self.unpooled(stage.in_shape) if point == "activation" else super().point_shape(point, stage)

    def pooled(self, shape: Shape, path: str) -> Shape:
        """Shape after the stem's pool.

        Raises:
            SpecError: a blur pool over an axis too short to reflect-pad.
        """
        if self.pool == "none":
            return shape
        if self.pool == "blur":
            kept = [window(size, self.pool_kernel_size, 1, self.pool_padding) for size in shape[1:]]
            check_blur((shape[0], *kept), path)
            sizes = (window(size, BLUR_TAPS, self.pool_stride, BLUR_TAPS // 2) for size in kept)
        else:
            sizes = (window(size, self.pool_kernel_size, self.pool_stride, self.pool_padding) for size in shape[1:])
        return (shape[0], *sizes)

    def pool_activations(self, before: Shape, after: Shape) -> int:
        """Values the pool (and the activation before it) keep for backward."""
        conv_out = values(before)
        if self.pool == "max":
            return conv_out + INDEX_VALUES * values(after)  # input and indices
        if self.pool == "blur":
            return 2 * conv_out + INDEX_VALUES * conv_out  # max input and indices, blur input
        if self.pool == "avg":
            return conv_out
        return conv_out if keeps_output(self.activation) else 0

    def activations_in_mode(self, stage: Stage, memory_efficient: bool | None, stored: int) -> tuple[int, int]:
        """``stored_activations`` of a stem that saves ``stored`` values when not recomputed: a
        memory-efficient one keeps its input alone and holds the rest again during its backward."""
        efficient = self.memory_efficient if memory_efficient is None else memory_efficient
        if not efficient:
            return stored, 0
        kept = values(stage.in_shape)
        if "activation" in stage.tapped:  # recomputation is cut there: the pool's checkpoint keeps that map
            kept += values(self.unpooled(stage.in_shape))
        return kept, stored - kept

    def pool_label(self) -> str:
        return "" if self.pool == "none" else f", {self.pool} pool"

