"""What a served network expects before its input: normalisation, labels, image sizes.

Written into an exported file's metadata (``archspec.preprocess``) so that the serving side
does not have to guess it, and optionally baked into the graph. Never imports torch.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from archspec.format.parts.base import Part

MAX_LABELS = 100_000
"""Labels a spec may list (ImageNet-21k has 21,841): bounds the list before it is read."""


class Preprocess(Part):
    """How raw input becomes what the network takes: ``(x - mean) / std`` per channel, after
    resizing and cropping images; and the name of each class."""

    mean: Annotated[list[float], Field(min_length=1, max_length=4096)] | None = None
    """Per-channel mean subtracted from the input (one value per input channel or feature)."""
    std: Annotated[list[PositiveFloat], Field(min_length=1, max_length=4096)] | None = None
    """Per-channel standard deviation the input is divided by (one value per channel or feature)."""
    labels: Annotated[list[Annotated[str, Field(max_length=200)]], Field(min_length=1, max_length=MAX_LABELS)] | None = None
    """Name of each output class, in order (one per class of a classifier)."""
    resize: PositiveInt | None = None
    """Images: the shorter side is resized to this many pixels before cropping."""
    crop: PositiveInt | None = None
    """Images: the centre crop taken after resizing, in pixels (square)."""

    @model_validator(mode="after")
    def _mean_and_std_together(self) -> Preprocess:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give mean and std together")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}")
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) is larger than resize ({self.resize})")
        return self
