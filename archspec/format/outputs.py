"""Named outputs taken at points of the network: a backbone's maps for detection and
segmentation heads, beside (or instead of) the head's own output. Never imports torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from archspec.format.parts.base import At, Part, split_at

MAX_OUTPUTS = 32
"""Outputs one spec may name: bounds the walks over them."""


class Tap(Part):
    """One output of the network, taken at a point of a part."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Name of the output (in the module's returned mapping and in exported files)."""
    at: At
    """Where: a part's path (``stem``, ``body[2]``, ``head``: after the whole part), or a point
    inside it (``stem.activation``, ``body[1].activation``, ``head.norm``, ``head.activation``)."""

    @property
    def path(self) -> str:
        """The part's path: ``stem``, ``body[2]`` or ``head``."""
        return split_at(self.at)[0]

    @property
    def point(self) -> str:
        """The point inside the part; ``output`` when ``at`` names the part alone."""
        return split_at(self.at)[1]
