"""The spec's ``defaults``: values every part that leaves a field out (writes ``inherit``) takes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveInt

from archspec.format.parts.base import Part
from archspec.format.parts.vocabulary import Activation, Norm


class Defaults(Part):
    """Values dense blocks take unless they set their own; ``norm`` and ``activation`` also
    reach the stem, transitions and head."""

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
    norm: Norm = "batch_norm"
    """Normalisation wherever a part leaves its norm out: ``batch_norm``, ``group_norm``
    (or ``{type: group_norm, groups: N}``), ``instance_norm``, ``layer_norm`` (linear layers), ``none``."""
    activation: Activation = "relu"
    """Activation wherever a part leaves it out: ``relu``, ``relu6``, ``leaky_relu`` (or
    ``{type: leaky_relu, negative_slope: s}``), ``elu``, ``gelu``, ``silu``, ``none``."""
