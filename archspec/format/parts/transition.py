"""The transition between dense blocks: norm, activation, projection, pooling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from archspec.errors import Problem, SpecError
from archspec.format.parts.base import (
    INDEX_VALUES,
    Box,
    Shape,
    StagePart,
    linear_params,
    norm_params,
    positions,
    spatial,
    values,
)
from archspec.format.parts.vocabulary import Activation, LayerKind, Norm

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

POOL = 2  # transitions pool 2×2 with stride 2
_DEFAULT_COMPRESSION = 0.5  # DenseNet-BC's θ


class Transition(StagePart):
    """Norm-activation-projection that compresses the features, then optional pooling."""

    inputs = frozenset({"image", "tabular"})
    type: Literal["transition"]
    """Tag: a transition."""
    compression: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Fraction of channels kept (output = floor(in × compression)); 0.5 when neither this nor ``out_channels`` is set."""
    out_channels: PositiveInt | None = None
    """Explicit output channels (or features), instead of ``compression``."""
    layer: LayerKind = "conv"
    """``conv`` (1×1 convolution) or ``linear`` projection."""
    pool: Literal["avg", "max", "none"] = "avg"
    """2×2, stride-2 pooling after the projection (``none`` for linear transitions)."""
    bias: bool = False
    """Whether the projection has a bias."""
    norm: Norm = "batch_norm"
    """Normalisation before the projection."""
    activation: Activation = "relu"
    """Activation before the projection."""
    post_activation: Activation = "none"
    """Activation after the projection (seed 001's MLP transitions end in ReLU)."""

    @model_validator(mode="after")
    def _one_width_rule(self) -> Transition:
        if self.compression is not None and self.out_channels is not None:
            raise ValueError("set either compression or out_channels, not both")
        if self.layer == "linear" and self.pool != "none":
            raise ValueError("a linear transition cannot pool: set pool: none")
        return self

    def out_width(self, in_width: int) -> int:
        """Channels (or features) this transition produces from ``in_width``."""
        if self.out_channels is not None:
            return self.out_channels
        return int(in_width * (_DEFAULT_COMPRESSION if self.compression is None else self.compression))

    def infer(self, in_shape: Shape, path: str) -> tuple[Shape, int]:
        out_width = self.out_width(in_shape[0])
        if out_width < 1:
            raise SpecError(
                Problem(f"compression {self.compression} of {in_shape[0]} channels leaves none", path=path)
            )
        params = norm_params(in_shape[0], self.norm) + linear_params(in_shape[0], out_width, self.bias)
        out: Shape = (out_width, *in_shape[1:])
        if self.pool != "none":
            out = spatial(path, out, (out_width, *(size // POOL for size in in_shape[1:])))
        return out, params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None, shared_input: bool) -> tuple[int, int]:
        per_position = positions(stage.in_shape)
        stored = 0
        if self.norm == "batch_norm":
            stored += stage.in_shape[0] * per_position  # normalised copy (ReLU'd in place), read by the projection
        if self.pool != "none" or self.post_activation == "relu":
            stored += stage.out_shape[0] * per_position  # projection output, saved by the pool or the ReLU
        if self.pool == "max":
            stored += INDEX_VALUES * values(stage.out_shape)
        return stored, 0

    def saves_output(self) -> bool:
        return self.pool == "none" and self.post_activation == "relu"

    def box(self, stage: Stage) -> Box:
        width = f"→ {self.out_channels}" if self.out_channels else f"×{self.compression or _DEFAULT_COMPRESSION:g}"
        pool = f", {self.pool} pool" if self.pool != "none" else ""
        return Box(f"transition {stage.number}", width + pool, "#d9ead3")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
