"""The assembled network: the one model surface every built spec answers to."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archspec.blocks import checkpointed


@dataclass(frozen=True)
class Output:
    """The head after ``features``: activation, global pooling of feature maps, dropout, the output layer."""

    name: str
    """``classifier`` (torchvision's name) or ``regressor``."""
    linear: nn.Linear
    activation: nn.Module | None
    pool: str
    """``avg``, ``max`` or ``avg_max`` (their mean), over every spatial axis."""
    drop_rate: float


def global_pool(x: Tensor, kind: str) -> Tensor:
    """``(N, C, *spatial)`` → ``(N, C)``; torch's adaptive pools, so 2D matches torchvision bit for bit."""
    dims = x.dim() - 2
    average = getattr(F, f"adaptive_avg_pool{dims}d")
    maximum = getattr(F, f"adaptive_max_pool{dims}d")
    if kind == "avg":
        pooled = average(x, 1)
    elif kind == "max":
        pooled = maximum(x, 1)
    else:
        pooled = 0.5 * (average(x, 1) + maximum(x, 1))
    return torch.flatten(pooled, 1)


class Features(nn.Sequential):
    """torchvision's flat ``features``. In training with gradients, each run of consecutive
    modules named in ``recomputed`` (a memory-efficient stem) keeps only its input for backward,
    which recomputes the run; module names, and so the state dict, stay flat."""

    def __init__(self, modules: OrderedDict[str, nn.Module], recomputed: tuple[str, ...] = ()):
        super().__init__(modules)
        self.recomputed = recomputed

    def forward(self, x: Tensor) -> Tensor:
        if not (self.recomputed and self.training and torch.is_grad_enabled()):
            return super().forward(x)
        # Grouped from the modules held now, so that a module replaced after building is the one run.
        for is_recomputed, run in itertools.groupby(self._modules.items(), key=lambda item: item[0] in self.recomputed):
            if is_recomputed:
                x = checkpointed(nn.Sequential(OrderedDict(run)), x)
            else:
                for _, module in run:
                    x = module(x)
        return x


class DenseNet(nn.Module):
    """``features`` (stem, dense blocks, transitions, head norm) then the output layer.

    Top-level names match torchvision (``features``, ``classifier``) so its
    weights load strictly; a regression head's layer is named ``regressor``.

    Attributes:
        num_features: width of the features the output layer reads.
        stage_modules: for each spec part (``stem``, ``body[0]``…, ``head``), the
            qualified names of the modules that implement it, in order.
    """

    def __init__(self, *, features: Features, output: Output, stage_modules: dict[str, tuple[str, ...]]):
        super().__init__()
        self.features = features
        self.head_activation = output.activation  # no parameters: absent from the state dict
        self.add_module(output.name, output.linear)
        self.output_name = output.name
        self.pool = output.pool
        self.drop_rate = output.drop_rate
        self.num_features = output.linear.in_features
        self.stage_modules = stage_modules

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before the head's activation: ``(N, C, *spatial)`` or ``(N, F)``."""
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Activation, global pooling of feature maps, dropout, output layer."""
        if self.head_activation is not None:
            x = self.head_activation(x)
        if x.dim() > 2:
            x = global_pool(x, self.pool)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return getattr(self, self.output_name)(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
