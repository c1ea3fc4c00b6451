"""Non-trivial network state for comparisons with a reference, and the error measure they use.

A freshly initialised BatchNorm is an identity in eval mode (mean 0, variance 1,
weight 1, bias 0), so two networks that differ in norm/activation order, or one
that ignores running statistics, give the same outputs. Every comparison with
torchvision, timm, MONAI or an ONNX runtime first fills the norms (and the biases
that init leaves at zero) with seeded random values from here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def randomize_state(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm random running statistics and affine values, and every bias random values.

    Variances are drawn in [0.5, 2] and scales in [0.5, 1.5] so that a 200-layer
    network's activations neither vanish nor overflow. Returns ``model``.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: Tensor, low: float, high: float) -> Tensor:
        return torch.rand(tensor.shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.3)
                module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
            if getattr(module, "weight", None) is not None and isinstance(
                module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
            ):
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
            if getattr(module, "bias", None) is not None and isinstance(module.bias, Tensor):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.2)
    return model


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """Largest elementwise difference over the largest expected magnitude (shapes must agree)."""
    assert actual.shape == expected.shape, f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((actual - expected).abs().max() / scale)


def assert_matches(model: nn.Module, reference: nn.Module, shape: tuple[int, ...], tolerance: float, name: str) -> None:
    """``model`` gives ``reference``'s outputs on one seeded input of ``shape``, within ``tolerance``
    relative to the largest; an all-zero reference output is refused, as it proves nothing."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        error = relative_error(model(x), expected)
    assert error <= tolerance, f"{name}: relative error {error:.2e}"
    assert float(expected.abs().max()) > 0, f"{name}: a zero output proves nothing"
