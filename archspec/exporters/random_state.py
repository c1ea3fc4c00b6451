"""Seeded random norm statistics, affine values and biases, for a verification that can fail.

A freshly built network's norms are identities in eval mode (running mean 0, variance 1,
scale 1, shift 0) and the builder sets its biases to 0. Compared on such a module, an
ONNX graph that drops a BatchNormalization, swaps its shift and its mean, or leaves out a
bias gives the same outputs as PyTorch. ``initial_values`` says whether a module is in that
state; the export then also verifies the same emission on a copy filled by ``randomize_state``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

RANDOM_STATE_SEED = 0
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _all(tensor: Tensor | None, value: float) -> bool:
    return tensor is not None and bool(torch.all(tensor == value))


def initial_values(module: nn.Module) -> str | None:
    """What in ``module`` still holds the values that hide norm and bias mistakes, or ``None``.

    A norm counts when its running statistics are (0, 1) or its affine values are (1, 0); a
    bias when it is all zeros. Returns e.g. ``"21 of 21 norms and 1 of 1 biases"``.
    """
    norms = trivial_norms = biases = zero_biases = 0
    for part in module.modules():
        if isinstance(part, _NORMS):
            norms += 1
            statistics = (getattr(part, "running_mean", None) is not None
                          and _all(part.running_mean, 0.0) and _all(part.running_var, 1.0))
            affine = (getattr(part, "weight", None) is not None
                      and _all(part.weight, 1.0) and _all(part.bias, 0.0))
            trivial_norms += statistics or affine
        elif isinstance(getattr(part, "bias", None), Tensor):
            biases += 1
            zero_biases += _all(part.bias, 0.0)
    found = [f"{count} of {total} {name}" for count, total, name in
             ((trivial_norms, norms, "norms"), (zero_biases, biases, "biases")) if count]
    return " and ".join(found) or None


def randomize_state(module: nn.Module, seed: int = RANDOM_STATE_SEED) -> nn.Module:
    """Give every norm random running statistics and affine values, and every bias random values.

    Means are drawn from N(0, 0.3²), variances in [0.5, 2] and scales in [0.5, 1.5], so that a
    200-layer network's activations neither vanish nor overflow; biases from N(0, 0.2²).
    Changes ``module`` in place and returns it.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: Tensor, low: float, high: float) -> Tensor:
        return torch.rand(tensor.shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for part in module.modules():
            if isinstance(part, nn.modules.batchnorm._NormBase) and part.track_running_stats:
                part.running_mean.copy_(torch.randn(part.running_mean.shape, generator=generator) * 0.3)
                part.running_var.copy_(uniform(part.running_var, 0.5, 2.0))
            if isinstance(part, _NORMS) and getattr(part, "weight", None) is not None:
                part.weight.copy_(uniform(part.weight, 0.5, 1.5))
            if isinstance(getattr(part, "bias", None), Tensor):
                part.bias.copy_(torch.randn(part.bias.shape, generator=generator) * 0.2)
    return module
