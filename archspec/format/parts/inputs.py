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


class SignalInput(InputPart):
    """A batch of 1D signals ``(N, channels, length)``: ECG leads, audio, sensor series."""

    layer = "conv"
    type: Literal["signal"]
    """Tag: a 1D signal input."""
    channels: PositiveInt
    """Channels (leads) of the signal."""
    length: PositiveInt
    """Samples per channel."""

    def sample_shape(self) -> Shape:
        return (self.channels, self.length)


class VolumeInput(InputPart):
    """A batch of 3D volumes ``(N, channels, depth, height, width)``: CT, MRI, microscopy stacks."""

    layer = "conv"
    type: Literal["volume"]
    """Tag: a 3D volume input."""
    channels: PositiveInt
    """Channels of the volume (1 for a CT scan)."""
    depth: PositiveInt
    """Depth of the volume in voxels (slices)."""
    height: PositiveInt
    """Height of the volume in voxels."""
    width: PositiveInt
    """Width of the volume in voxels."""

    def sample_shape(self) -> Shape:
        return (self.channels, self.depth, self.height, self.width)


class TabularInput(InputPart):
    """A batch of feature vectors ``(N, features)``."""

    layer = "linear"
    type: Literal["tabular"]
    """Tag: a tabular input."""
    features: PositiveInt
    """Number of input features per row."""

    def sample_shape(self) -> Shape:
        return (self.features,)
