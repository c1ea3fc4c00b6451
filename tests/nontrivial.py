"""Non-trivial network state for comparisons with a reference, and the error measure they use.

A freshly initialised BatchNorm is an identity in eval mode (mean 0, variance 1,
weight 1, bias 0), so two networks that differ in norm/activation order, or one
that ignores running statistics, give the same outputs. Every comparison with
torchvision, timm, MONAI or an ONNX runtime first fills the norms (and the biases
that init leaves at zero) with seeded random values (``randomize_state``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from archspec.exporters.random_state import randomize_state  # the product's own, which its export check uses

__all__ = ["assert_matches", "randomize_state", "relative_error"]


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
