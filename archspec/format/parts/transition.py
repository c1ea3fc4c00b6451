"""The transition between dense blocks: norm, activation, projection, dropout, pooling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from archspec.errors import Problem, SpecError
from archspec.format.parts.base import (
    INDEX_VALUES,
    Box,
    Shape,
    StagePart,
    linear_params,
    positions,
    spatial,
    spatial_dims,
    values,
    window,
)
from archspec.format.parts.vocabulary import (
    BLUR_TAPS,
    INHERIT,
    Activation,
    Inherit,
    LayerKind,
    Norm,
    PoolKind,
    check_blur,
    check_norm,
    keeps_output,
    norm_act_values,
    norm_params,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

_DEFAULT_COMPRESSION = 0.5  # DenseNet-BC's θ


class Transition(StagePart):
    """Norm-activation-projection that compresses the features, then optional dropout and pooling."""

    inputs = frozenset({"signal", "image", "volume", "tabular"})
    points: ClassVar[dict[str, str]] = {
        "activation": "after the norm and activation, before the projection "
                      "(segmentation-models-pytorch's skip)",
    }
    type: Literal["transition"]
    """Tag: a transition."""
    compression: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Fraction of channels kept (output = floor(in × compression)); 0.5 when neither this nor ``out_channels`` is set."""
    out_channels: PositiveInt | None = None
    """Explicit output channels (or features), instead of ``compression``."""
    layer: LayerKind = "conv"
    """``conv`` (1×1 convolution) or ``linear`` projection."""
    pool: PoolKind = "avg"
    """Pooling after the projection: ``avg``, ``max``, ``blur`` (timm's anti-aliased
    [1, 2, 1] blur with stride ``pool_size``) or ``none`` (``none`` for linear transitions)."""
    pool_size: PositiveInt = 2
    """Kernel and stride of an ``avg`` or ``max`` pool; stride of a ``blur``."""
    bias: bool = False
    """Whether the projection has a bias."""
    norm: Norm | Inherit = INHERIT
    """Normalisation before the projection; ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation before the projection; ``inherit``: ``defaults.activation``."""
    post_activation: Activation = "none"
    """Activation after the projection (seed 001's MLP transitions end in ReLU)."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout probability after the projection (the paper's CIFAR recipe without augmentation: 0.2)."""

    @model_validator(mode="after")
    def _one_width_rule(self) -> Transition:
        if self.compression is not None and self.out_channels is not None:
            raise ValueError("set either compression or out_channels, not both")
        if self.layer == "linear" and self.pool != "none":
            raise ValueError("a linear transition cannot pool: set pool: none")
        return self

    def layer_kind(self) -> str | None:
        return self.layer

    def point_shape(self, point: str, stage: Stage) -> Shape:
        return stage.in_shape if point == "activation" else super().point_shape(point, stage)

    def out_width(self, in_width: int) -> int:
        """Channels (or features) this transition produces from ``in_width``."""
        if self.out_channels is not None:
            return self.out_channels
        return int(in_width * (_DEFAULT_COMPRESSION if self.compression is None else self.compression))

    def _pooled(self, size: int) -> int:
        if self.pool == "blur":
            return window(size, BLUR_TAPS, self.pool_size, BLUR_TAPS // 2)
        return size if self.pool == "none" else size // self.pool_size

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        out_width = self.out_width(in_shape[0])
        if out_width < 1:
            raise SpecError(
                Problem(f"compression {self.compression} of {in_shape[0]} channels leaves none", path=path)
            )
        check_norm(self.norm, in_shape[0], in_shape, path)
        if self.pool == "blur":
            check_blur(in_shape, path)
        params = norm_params(in_shape[0], self.norm) + linear_params(in_shape[0], out_width, self.bias, 1,
                                                                    spatial_dims(in_shape))
        out = spatial(path, in_shape, (out_width, *(self._pooled(size) for size in in_shape[1:])))
        return out, params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        per_position = positions(stage.in_shape)
        projected = stage.out_shape[0] * per_position  # the projection's output, before pooling
        # The norm's input is the block output, counted there; the projection's input (the
        # activation's output) and a non-in-place activation's input are this part's.
        stored = norm_act_values(stage.in_shape[0], "none", self.activation) * per_position
        stored += stage.in_shape[0] * per_position if self.norm != "none" else 0
        if self.pool != "none" or keeps_output(self.post_activation):
            stored += projected  # saved by the pool or the activation after the projection
        if self.drop_rate > 0:
            stored += projected  # dropout's mask
        if self.pool in ("max", "blur"):
            stored += INDEX_VALUES * values(stage.out_shape) if self.pool == "max" else projected
        return stored, 0


    def box(self, stage: Stage) -> Box:
        width = f"→ {self.out_channels}" if self.out_channels else f"×{self.compression or _DEFAULT_COMPRESSION:g}"
        pool = f", {self.pool} pool" if self.pool != "none" else ""
        return Box(f"transition {stage.number}", width + pool, "#d9ead3")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
