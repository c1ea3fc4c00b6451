"""The dense block, and the ``defaults`` its fields inherit from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Box, Part, Shape, StagePart, linear_params, norm_params, positions
from archspec.format.parts.vocabulary import LayerKind

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

KERNEL = 3  # a conv dense layer ends in a 3×3, padding 1 convolution: the size is kept
MAX_LAYERS = 1000
"""Layers one block may have (DenseNet-264's largest has 64): bounds every per-layer loop."""
_MASK_VALUES = 1  # dropout keeps a float32 mask on CPU (one byte on CUDA; counted as four)


class Defaults(Part):
    """Values every dense block takes unless it sets its own."""

    growth_rate: PositiveInt = 32
    """Channels (or features) each dense layer adds."""
    bn_size: PositiveInt | None = 4
    """Bottleneck width as a multiple of ``growth_rate``; ``null`` for no bottleneck."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout probability after each dense layer (training only)."""
    memory_efficient: bool = False
    """Recompute activations in the backward pass instead of storing them."""
    bias: bool = False
    """Whether the dense layers' convolutions or linear maps have a bias."""


INHERITED_FIELDS = tuple(Defaults.model_fields)
INHERIT = "inherit"
"""A block field's value when it takes the spec's ``defaults`` (what leaving it out means)."""
Inherit = Literal["inherit"]


class DenseBlock(StagePart):
    """``num_layers`` pre-activation layers, each fed the concatenation of all earlier outputs.

    Fields left out are taken from the spec's ``defaults``.
    """

    inputs = frozenset({"image", "tabular"})
    dense: ClassVar[bool] = True
    type: Literal["dense_block"]
    """Tag: a dense block."""
    num_layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)]
    """Number of dense layers in the block."""
    layer: LayerKind = "conv"
    """``conv`` (BN-ReLU-Conv3×3, image input) or ``linear`` (BN1d-ReLU-Linear, tabular input)."""
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

    def resolved(self, defaults: Defaults) -> DenseBlock:
        """This block with every field it inherits taken from ``defaults``."""
        inherited = {name: getattr(defaults, name) for name in INHERITED_FIELDS if getattr(self, name) == INHERIT}
        return self.model_copy(update=inherited)

    @property
    def kernel(self) -> int:
        """Kernel of the layer's last projection: 3×3 for convolutions, 1 for linear maps."""
        return KERNEL if self.layer == "conv" else 1

    def layer_params(self, in_width: int) -> int:
        """Parameters of one dense layer reading ``in_width`` channels (or features)."""
        params = norm_params(in_width, "batch_norm")
        if self.bn_size is None:
            return params + linear_params(in_width, self.growth_rate, self.bias, self.kernel)
        bottleneck = self.bn_size * self.growth_rate
        params += linear_params(in_width, bottleneck, self.bias)  # 1×1 conv or linear
        params += norm_params(bottleneck, "batch_norm")
        return params + linear_params(bottleneck, self.growth_rate, self.bias, self.kernel)

    def _summed_widths(self, in_width: int) -> int:
        """Sum of the widths the layers read: ``L·c + g·L(L-1)/2``, in closed form."""
        layers = self.num_layers
        return layers * in_width + self.growth_rate * layers * (layers - 1) // 2

    def infer(self, in_shape: Shape, path: str) -> tuple[Shape, int]:
        # A layer's parameters are affine in the width it reads, so the block's sum
        # has a closed form: no walk over the layers.
        fixed = self.layer_params(0)
        per_width = self.layer_params(1) - fixed
        params = self.num_layers * fixed + per_width * self._summed_widths(in_shape[0])
        return (in_shape[0] + self.num_layers * self.growth_rate, *in_shape[1:]), params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None, shared_input: bool) -> tuple[int, int]:
        efficient = self.memory_efficient if memory_efficient is None else memory_efficient
        per_position = positions(stage.in_shape)
        bottleneck = 0 if self.bn_size is None else self.bn_size * self.growth_rate
        # A naive layer saves the concatenation and its normalised copy, the same for the
        # bottleneck, and dropout's mask.
        fixed = 2 * bottleneck + (_MASK_VALUES * self.growth_rate if self.drop_rate > 0 else 0)
        # The block's output concatenation is saved by the norm that reads it next.
        output = stage.out_shape[0] * per_position
        working = 2 * output
        if efficient:
            kept = stage.out_shape[0] - self.growth_rate - (stage.in_shape[0] if shared_input else 0)
            stored = kept * per_position  # every layer's inputs, kept once
            last_width = stage.out_shape[0] - self.growth_rate
            working += (2 * last_width + fixed) * per_position  # the layer being recomputed
        else:
            stored = (2 * self._summed_widths(stage.in_shape[0]) + self.num_layers * fixed) * per_position
        return stored + output, working

    def box(self, stage: Stage) -> Box:
        return Box(f"dense block {stage.number}", f"{self.num_layers} × {self.growth_rate}", "#f6dfc4",
                   sketch_layers=self.num_layers)

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.in_shape[0] + (index + 1) * self.growth_rate for index in range(self.num_layers)]
