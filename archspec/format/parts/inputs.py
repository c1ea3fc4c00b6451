"""Inputs: what one sample of a batch looks like, and the layer kind it asks for downstream."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from archspec.format.parts.base import InputPart, Shape


class ImageInput(InputPart):
    """An image batch ``(N, channels, height, width)``."""

    layer = "conv"
    type: Literal["image"]
    """Tag: an image input."""
    channels: PositiveInt
    """Channels of the input image (1 for Fashion-MNIST, 3 for RGB)."""
    height: PositiveInt
    """Height of the input image in pixels."""
    width: PositiveInt
    """Width of the input image in pixels."""

    def sample_shape(self) -> Shape:
        return (self.channels, self.height, self.width)


class TabularInput(InputPart):
    """A batch of feature vectors ``(N, features)``."""

    layer = "linear"
    type: Literal["tabular"]
    """Tag: a tabular input."""
    features: PositiveInt
    """Number of input features per row."""

    def sample_shape(self) -> Shape:
        return (self.features,)
