"""Every kind of part, one home each, and the registry that names them by tag.

Adding a kind of part: write its home here (schema, shape and parameter rule,
memory rule, diagram box), add it to its role below, register its torch factory
in ``archspec/builder.py`` and its ONNX emitter; ``tests/test_conformance.py`` fails for a tag
that misses one, or has no minimal spec there.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from archspec.format.parts.base import HeadPart, InputPart, Part, StagePart
from archspec.format.parts.conv_stem import ConvStem
from archspec.format.parts.deep_stem import DeepStem
from archspec.format.parts.defaults import Defaults
from archspec.format.parts.dense_block import DenseBlock
from archspec.format.parts.concat import Concat
from archspec.format.parts.heads import ClassifierHead, FeaturesHead, RegressorHead, SegmentationHead
from archspec.format.parts.inputs import ImageInput, SignalInput, TabularInput, VolumeInput
from archspec.format.parts.mlp_stem import MLPStem
from archspec.format.parts.norm import NormPart
from archspec.format.parts.transition import Transition
from archspec.format.parts.unet_block import UNetBlock
from archspec.format.parts.upsampling import TransitionUp

ROLES: dict[str, tuple[type[Part], ...]] = {
    "input": (ImageInput, SignalInput, VolumeInput, TabularInput),
    "stem": (ConvStem, DeepStem, MLPStem),
    "body": (DenseBlock, Transition, NormPart, TransitionUp, Concat, UNetBlock),
    "head": (ClassifierHead, RegressorHead, SegmentationHead, FeaturesHead),
}
"""The kinds of part each field of a spec may hold, in the order a spec is read."""


def tag(kind: type[Part]) -> str:
    """The ``type`` tag a kind of part is written with."""
    return kind.model_fields["type"].annotation.__args__[0]


PARTS: dict[str, type[Part]] = {tag(kind): kind for kinds in ROLES.values() for kind in kinds}
"""Every kind of part by tag."""


def _union(kinds: tuple[type[Part], ...]) -> object:
    return Annotated[Union[kinds], Field(discriminator="type")]


Input = _union(ROLES["input"])
Stem = _union(ROLES["stem"])
BodyPart = _union(ROLES["body"])
Head = _union(ROLES["head"])

__all__ = [
    "PARTS", "ROLES", "BodyPart", "ClassifierHead", "Concat", "ConvStem", "DeepStem", "Defaults", "DenseBlock", "FeaturesHead", "Head", "HeadPart",
    "ImageInput", "Input", "InputPart", "MLPStem", "NormPart", "Part", "RegressorHead", "SegmentationHead", "SignalInput", "Stem",
    "StagePart", "TabularInput", "Transition", "TransitionUp", "UNetBlock", "VolumeInput", "tag",
]
