"""Heads: norm and activation after the last dense block, global pooling, dropout, the output layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt

from archspec.format.parts.base import INDEX_VALUES, Box, HeadPart, Shape, linear_params, spatial_dims, values
from archspec.format.parts.vocabulary import (
    Activation,
    INHERIT,
    Inherit,
    Norm,
    OddKernel,
    check_norm,
    keeps_output,
    norm_act_values,
    norm_params,
)

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

_COLOUR = "#e6d8ef"
GlobalPool = Literal["avg", "max", "avg_max"]


class _Head(HeadPart):
    """What both heads share: the final norm and activation, global pooling of feature maps,
    dropout, a Linear."""

    inputs = frozenset({"signal", "image", "volume", "tabular"})
    pools = True
    points: ClassVar[dict[str, str]] = {
        "norm": "after the final norm (torchvision's ``features.norm5``), before the activation",
        "activation": "after the final norm and activation: the map the head pools (timm's last feature)",
    }
    feature_point = "activation"
    norm: Norm | Inherit = INHERIT
    """Normalisation after the last dense block (torchvision's ``features.norm5``); ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation before pooling and the output layer; ``inherit``: ``defaults.activation``."""
    pool: GlobalPool = "avg"
    """Global pooling of feature maps: ``avg``, ``max``, or ``avg_max`` (their mean, timm's ``avgmax``)."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout probability before the output layer (timm's ``drop_rate``)."""

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        check_norm(self.norm, in_shape[0], in_shape, path)
        return (self.outputs,), norm_params(in_shape[0], self.norm) + linear_params(in_shape[0], self.outputs, True)

    def point_shape(self, point: str, stage: Stage) -> Shape:
        return stage.in_shape if point in self.points else super().point_shape(point, stage)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        before = stage.in_shape
        # The activation is not in place here (a new tensor), and global pooling or the Linear
        # keep what they read; max pooling keeps an index per channel as well.
        stored = values(before) if self.activation != "none" else 0
        if not keeps_output(self.activation) and self.activation != "none":
            stored += values(before)
        if spatial_dims(before):
            stored += before[0] * (1 if self.pool == "avg" else 1 + INDEX_VALUES)  # pooled (+ max indices)
        if self.drop_rate > 0:
            stored += before[0]  # dropout's mask
        return stored, 0

    def depth_widths(self, stage: Stage) -> list[int]:
        return []


class ClassifierHead(_Head):
    """Norm, activation, global pooling, dropout, then a linear map to class logits."""

    output_name = "logits"
    loss = "cross_entropy"
    class_scores = True
    type: Literal["classifier"]
    """Tag: a classification head."""
    num_classes: PositiveInt
    """Number of output classes."""

    @property
    def outputs(self) -> int:
        return self.num_classes

    def box(self, stage: Stage) -> Box:
        return Box("classifier", f"{self.num_classes} classes", _COLOUR)


class RegressorHead(_Head):
    """Norm, activation, global pooling of feature maps, dropout, then a linear map to the targets."""

    output_name = "prediction"
    loss = "mse"
    class_scores = False
    type: Literal["regressor"]
    """Tag: a regression head."""
    out_features: PositiveInt = 1
    """Number of predicted values."""

    @property
    def outputs(self) -> int:
        return self.out_features

    def box(self, stage: Stage) -> Box:
        return Box("regressor", f"{self.out_features} out", _COLOUR)


class SegmentationHead(HeadPart):
    """Per-position class scores at the input's resolution: an optional norm and activation,
    then a ``kernel_size`` convolution to ``num_classes`` (FC-DenseNet's 1×1,
    segmentation-models-pytorch's 3×3), named ``classifier``."""

    inputs = frozenset({"signal", "image", "volume"})
    output_name = "logits"
    loss = "cross_entropy"
    class_scores = True
    pools = False
    type: Literal["segmentation"]
    """Tag: a per-position classification head."""
    num_classes: PositiveInt
    """Number of output classes (channels of the logits)."""
    kernel_size: OddKernel = 1
    """Kernel of the output convolution (odd: padding keeps the size)."""
    norm: Norm = "none"
    """Normalisation before the output convolution (none in FC-DenseNet or a U-Net)."""
    activation: Activation = "none"
    """Activation before the output convolution."""

    @property
    def outputs(self) -> int:
        return self.num_classes

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        check_norm(self.norm, in_shape[0], in_shape, path)
        dims = spatial_dims(in_shape)
        params = norm_params(in_shape[0], self.norm)
        return (self.num_classes, *in_shape[1:]), params + linear_params(in_shape[0], self.num_classes, True,
                                                                         self.kernel_size, dims)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        # The norm's (or a first activation's) input is the part before's output, counted there.
        # The convolution saves its input: a new tensor when a norm or the activation (never in
        # place here) made it; an activation that keeps its input (GELU, SiLU) after a norm
        # saves the norm's output as well.
        made = self.norm != "none" or self.activation != "none"
        both = self.norm != "none" and self.activation != "none" and not keeps_output(self.activation)
        return (int(made) + int(both)) * values(stage.in_shape), 0

    def box(self, stage: Stage) -> Box:
        return Box("segmentation", f"{self.num_classes} classes per position", _COLOUR)

    def depth_widths(self, stage: Stage) -> list[int]:
        return []


class FeaturesHead(HeadPart):
    """No output layer: the network ends with the final norm and activation, and its output is
    that map (timm's ``reset_classifier(0)`` without pooling): a backbone whose spec names its
    ``outputs``."""

    inputs = frozenset({"signal", "image", "volume", "tabular"})
    output_name = "features"
    loss = "mse"
    class_scores = False
    pools = False
    points: ClassVar[dict[str, str]] = _Head.points
    feature_point = "activation"
    type: Literal["features"]
    """Tag: a head that keeps the features."""
    norm: Norm | Inherit = INHERIT
    """Normalisation after the last dense block (``features.norm5``); ``inherit``: ``defaults.norm``."""
    activation: Activation | Inherit = INHERIT
    """Activation after it; ``inherit``: ``defaults.activation``."""

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        check_norm(self.norm, in_shape[0], in_shape, path)
        return in_shape, norm_params(in_shape[0], self.norm)

    def point_shape(self, point: str, stage: Stage) -> Shape:
        return stage.in_shape if point in self.points else super().point_shape(point, stage)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        return (values(stage.in_shape) + norm_act_values(values(stage.in_shape), self.norm, self.activation)), 0

    def box(self, stage: Stage) -> Box:
        return Box("features", f"{stage.out_shape[0]} channels out", _COLOUR)

    def depth_widths(self, stage: Stage) -> list[int]:
        return []
