"""The dense block: ``num_layers`` pre-activation layers reading every earlier feature map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Shape, StagePart, linear_params, positions, spatial_dims
from archspec.format.parts.vocabulary import (
    Activation,
    INHERIT,
    Inherit,
    LayerKind,
    Norm,
    OddKernel,
    check_norm,
    norm_act_values,
    norm_params,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

MAX_LAYERS = 1000
"""Layers one block may have (DenseNet-264's largest has 64): bounds every per-layer loop."""
_MASK_VALUES = 1  # dropout keeps a float32 mask on CPU (one byte on CUDA; counted as four)


class DenseBlock(StagePart):
    """``num_layers`` pre-activation layers, each fed the concatenation of all earlier outputs.

    Fields that say ``inherit`` (the default) are taken from the spec's ``defaults``.
    """

    inputs = frozenset({"signal", "image", "volume", "tabular"})
    dense = True
    feature_point = "output"
    type: Literal["dense_block"]
    """Tag: a dense block."""
    num_layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)]
    """Number of dense layers in the block."""
    layer: LayerKind = "conv"
    """``conv`` (norm-activation-convolution, signal/image/volume input) or ``linear``
    (norm-activation-Linear, tabular input)."""
    kernel_size: OddKernel = 3
    """Kernel of each layer's last convolution (odd: padding keeps the size); 1 for linear layers."""
    growth_rate: PositiveInt | Inherit = INHERIT
    """Channels (or features) each layer adds; ``inherit``: ``defaults.growth_rate``."""
    bn_size: PositiveInt | None | Inherit = INHERIT
    """Bottleneck width as a multiple of ``growth_rate``, ``null`` for none; ``inherit``: ``defaults.bn_size``."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] | Inherit = INHERIT
    """Dropout probability after each layer; ``inherit``: ``defaults.drop_rate``."""
    memory_efficient: bool | Inherit = INHERIT
    """Recompute activations in backward; ``inherit``: ``defaults.memory_efficient``."""
    bias: bool | Inherit = INHERIT
    """Whether the layers have a bias; ``inherit``: ``defaults.bias``."""
    norm: Norm | Inherit = INHERIT
    """Normalisation before each projection; ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation after each normalisation; ``inherit``: ``defaults.activation``."""
    output: Literal["all", "new"] = "all"
    """``all``: the input and every layer's new features; ``new``: the new features only
    (FC-DenseNet's bottleneck and up path, whose input comes back through a skip)."""

    def layer_kind(self) -> str | None:
        return self.layer

    @property
    def kernel(self) -> int:
        """Kernel of the layer's last projection: ``kernel_size`` for convolutions, 1 for linear maps."""
        return self.kernel_size if self.layer == "conv" else 1

    @property
    def bottleneck(self) -> int:
        """Width of the bottleneck (0: none)."""
        return 0 if self.bn_size is None else self.bn_size * self.growth_rate

    def layer_params(self, in_width: int, dims: int) -> int:
        """Parameters of one dense layer reading ``in_width`` channels (or features)."""
        params = norm_params(in_width, self.norm)
        if self.bn_size is None:
            return params + linear_params(in_width, self.growth_rate, self.bias, self.kernel, dims)
        params += linear_params(in_width, self.bottleneck, self.bias, 1, dims)  # 1×1 conv or linear
        params += norm_params(self.bottleneck, self.norm)
        return params + linear_params(self.bottleneck, self.growth_rate, self.bias, self.kernel, dims)

    def _summed_widths(self, in_width: int) -> int:
        """Sum of the widths the layers read: ``L·c + g·L(L-1)/2``, in closed form."""
        layers = self.num_layers
        return layers * in_width + self.growth_rate * layers * (layers - 1) // 2

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        dims = spatial_dims(in_shape)
        out_width = (in_shape[0] if self.output == "all" else 0) + self.num_layers * self.growth_rate
        # Every width a norm sees is the block's input plus a multiple of the growth rate:
        # checking the first and the growth covers them all without a walk over the layers.
        check_norm(self.norm, (in_shape[0], self.growth_rate, self.bottleneck or self.growth_rate), in_shape, path)
        # A layer's parameters are affine in the width it reads, so the block's sum
        # has a closed form: no walk over the layers.
        fixed = self.layer_params(0, dims)
        per_width = self.layer_params(1, dims) - fixed
        params = self.num_layers * fixed + per_width * self._summed_widths(in_shape[0])
        return (out_width, *in_shape[1:]), params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        efficient = self.memory_efficient if memory_efficient is None else memory_efficient
        per_position = positions(stage.in_shape)

        def stage_values(width: int) -> int:
            # The norm's input (and a non-in-place activation's), and the projection's input.
            return norm_act_values(width, self.norm, self.activation) + width

        # A naive layer saves the concatenation's stage, the bottleneck's, and dropout's mask.
        fixed = (stage_values(self.bottleneck) if self.bottleneck else 0) + (
            _MASK_VALUES * self.growth_rate if self.drop_rate > 0 else 0
        )
        # The block's output is saved by the part that reads it next (counted here, not there):
        # naive, the concatenation it returns (the new features alone for ``output: new``);
        # memory-efficient, the shared buffer, which a ``new`` output is a view of.
        full_width = stage.in_shape[0] + self.num_layers * self.growth_rate
        output = (full_width if efficient else stage.out_shape[0]) * per_position
        if efficient:
            # Every feature map lives once, in the block's output (shared storage); backward
            # accumulates into the output's gradient in place, recomputes one layer at a time
            # from a contiguous copy of its input, and holds that copy's gradient and the
            # gradient through its norm as well (three widths).
            stored = 0
            last_width = full_width - self.growth_rate
            working = output + (stage_values(last_width) + 3 * last_width + fixed) * per_position
        else:
            # The output's gradient, and the gradients accumulated for each feature.
            working = 2 * output
            summed = self._summed_widths(stage.in_shape[0])
            stored = (stage_values(summed) + self.num_layers * fixed) * per_position
        return stored + output, working

    def box(self, stage: Stage) -> Box:
        new = ", new only" if self.output == "new" else ""
        return Box(f"dense block {stage.number}", f"{self.num_layers} × {self.growth_rate}{new}", "#f6dfc4",
                   sketch_layers=self.num_layers)

    def depth_widths(self, stage: Stage) -> list[int]:
        widths = [stage.in_shape[0] + (index + 1) * self.growth_rate for index in range(self.num_layers)]
        return [*widths[:-1], stage.out_shape[0]]
