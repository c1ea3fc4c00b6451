"""The assembled network: the one model surface every built spec answers to."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Output:
    """The head after ``features``: activation, global pooling of images, the output layer."""

    name: str
    """``classifier`` (torchvision's name) or ``regressor``."""
    linear: nn.Linear
    activation: bool
    global_pool: bool


class DenseNet(nn.Module):
    """``features`` (stem, dense blocks, transitions, head norm) then the output layer.

    Top-level names match torchvision (``features``, ``classifier``) so its
    weights load strictly; a regression head's layer is named ``regressor``.

    Attributes:
        num_features: width of the features the output layer reads.
        stage_modules: for each spec part (``stem``, ``body[0]``…, ``head``), the
            qualified names of the modules that implement it, in order.
    """

    def __init__(
        self,
        *,
        features: nn.Sequential,
        output: Output,
        stage_modules: dict[str, tuple[str, ...]],
    ):
        super().__init__()
        self.features = features
        self.add_module(output.name, output.linear)
        self.output_name = output.name
        self.activation = output.activation
        self.global_pool = output.global_pool
        self.num_features = output.linear.in_features
        self.stage_modules = stage_modules

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before the head's activation: ``(N, C, H, W)`` or ``(N, F)``."""
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Activation, global average pool for images, output layer."""
        if self.activation:
            x = F.relu(x)
        if self.global_pool:
            x = F.adaptive_avg_pool2d(x, (1, 1))  # (N, C, H, W) → (N, C, 1, 1)
            x = torch.flatten(x, 1)
        return getattr(self, self.output_name)(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
