"""Heads: norm and activation after the last dense block, then the output layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import PositiveInt

from archspec.format.parts.base import Box, Shape, StagePart, linear_params, norm_params, values
from archspec.format.parts.vocabulary import Activation, Norm

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

_COLOUR = "#e6d8ef"


class _Head(StagePart):
    """What both heads share: the final norm and activation, global pooling of images, a Linear."""

    output_name: ClassVar[str]
    """Name of the network's output in an exported file."""
    loss: ClassVar[str]
    """Loss a training step uses with this head (``cross_entropy`` or ``mse``)."""

    norm: Norm = "batch_norm"
    """Normalisation after the last dense block (torchvision's ``features.norm5``)."""
    activation: Activation = "relu"
    """Activation before pooling and the output layer."""

    @property
    def outputs(self) -> int:
        """Values the head produces per sample."""
        raise NotImplementedError

    def infer(self, in_shape: Shape, path: str) -> tuple[Shape, int]:
        return (self.outputs,), norm_params(in_shape[0], self.norm) + linear_params(in_shape[0], self.outputs, True)

    def stored_activations(self, stage: Stage, memory_efficient: bool | None, shared_input: bool) -> tuple[int, int]:
        before = stage.in_shape
        relu = values(before) if self.activation == "relu" else 0  # not in place: a new tensor
        if len(before) == 1:
            return relu, 0  # the linear map reads the ReLU's output
        return relu + before[0], 0  # pooled features, saved by the linear map

    def depth_widths(self, stage: Stage) -> list[int]:
        return []


class ClassifierHead(_Head):
    """Norm, activation, global average pool, then a linear map to class logits."""

    inputs = frozenset({"image"})
    output_name = "logits"
    loss = "cross_entropy"
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
    """Norm, activation, then a linear map to the regression targets."""

    inputs = frozenset({"tabular"})
    output_name = "prediction"
    loss = "mse"
    type: Literal["regressor"]
    """Tag: a regression head for tabular input."""
    out_features: PositiveInt = 1
    """Number of predicted values."""

    @property
    def outputs(self) -> int:
        return self.out_features

    def box(self, stage: Stage) -> Box:
        return Box("regressor", f"{self.out_features} out", _COLOUR)
