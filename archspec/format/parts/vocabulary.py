"""The choices several kinds of part share: norms, activations, layer kinds."""

from __future__ import annotations

from typing import Literal

Norm = Literal["batch_norm", "none"]
Activation = Literal["relu", "none"]
LayerKind = Literal["conv", "linear"]
