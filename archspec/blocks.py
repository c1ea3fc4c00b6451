"""Torch modules of a DenseNet: dense layer and block, transition, stems.

Module names follow torchvision's ``models/densenet.py`` (``norm1``, ``conv1``,
``denselayer1``…) because pretrained weights are keyed by them. Factories take
plain keyword arguments and never see spec objects.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import Tensor, nn

def batch_norm(width: int, *, conv: bool) -> nn.Module:
    """BatchNorm over ``width`` channels (2d) or features (1d)."""
    return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)


def _project(in_width: int, out_width: int, *, conv: bool, kernel: int, bias: bool) -> nn.Module:
    if conv:
        return nn.Conv2d(in_width, out_width, kernel, padding=kernel // 2, bias=bias)
    return nn.Linear(in_width, out_width, bias=bias)


class _KeepRunningStats:
    """Snapshot the layer's BatchNorm buffers on entry and restore them on exit.

    Recomputing a layer in the backward pass runs its BatchNorms in training mode
    a second time; without this their running mean, variance and batch count
    would be updated twice per step.
    """

    def __init__(self, layer: nn.Module):
        norms = [m for m in layer.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        self.buffers = [buffer for norm in norms for buffer in norm.buffers()]

    def __enter__(self) -> None:
        self.saved = [b.clone() for b in self.buffers]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self.buffers, self.saved):
                buffer.copy_(saved)


class DenseLayer(nn.Module):
    """Pre-activation layer reading the concatenation of every earlier feature map.

    With a bottleneck (``bn_size``) it is BN-ReLU-Conv1×1-BN-ReLU-Conv3×3, as in
    DenseNet-BC; without, BN-ReLU-Conv3×3 as in the tutorial. ``conv=False`` swaps
    in BatchNorm1d and Linear for tabular input.

    ``memory_efficient`` recomputes the whole layer — concatenation, every
    BN-ReLU-projection stage and dropout — in the backward pass, so a training
    step stores only the layer's inputs (the block's features, kept anyway) and
    its ``growth_rate``-wide output: memory grows linearly with depth instead of
    quadratically. torchvision recomputes only the concatenation and first stage.
    """

    def __init__(
        self,
        *,
        in_width: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        memory_efficient: bool,
        bias: bool,
        conv: bool,
        kernel_size: int,
    ):
        super().__init__()
        op = "conv" if conv else "linear"
        if bn_size is None:
            self.stages = ("",)
            widths = (in_width, growth_rate)
        else:
            self.stages = ("1", "2")
            widths = (in_width, bn_size * growth_rate, growth_rate)
        for index, suffix in enumerate(self.stages):
            last = index == len(self.stages) - 1
            self.add_module(f"norm{suffix}", batch_norm(widths[index], conv=conv))
            self.add_module(f"relu{suffix}", nn.ReLU(inplace=True))
            self.add_module(
                f"{op}{suffix}",
                _project(
                    widths[index], widths[index + 1], conv=conv, kernel=kernel_size if last else 1, bias=bias
                ),
            )
        self.op = op
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _layer(self, *features: Tensor) -> Tensor:
        x = torch.cat(features, 1)
        for suffix in self.stages:
            x = getattr(self, f"norm{suffix}")(x)
            x = getattr(self, f"relu{suffix}")(x)
            x = getattr(self, f"{self.op}{suffix}")(x)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x

    def _contexts(self) -> tuple[contextlib.AbstractContextManager, _KeepRunningStats]:
        return contextlib.nullcontext(), _KeepRunningStats(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpoint replays the RNG state, so dropout masks match.
            return checkpoint.checkpoint(
                self._layer, *features, use_reentrant=False, context_fn=self._contexts
            )
        return self._layer(*features)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; keeps the feature list inside and concatenates once."""

    def __init__(
        self,
        *,
        num_layers: int,
        in_width: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        memory_efficient: bool,
        bias: bool,
        conv: bool,
        kernel_size: int,
    ):
        super().__init__()
        for index in range(num_layers):
            layer = DenseLayer(
                in_width=in_width + index * growth_rate,
                growth_rate=growth_rate,
                bn_size=bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                bias=bias,
                conv=conv,
                kernel_size=kernel_size,
            )
            self.add_module(f"denselayer{index + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


def transition(
    *,
    in_width: int,
    out_width: int,
    conv: bool,
    norm: bool,
    activation: bool,
    bias: bool,
    pool: str,
    pool_size: int,
    post_activation: bool,
) -> nn.Sequential:
    """Norm-ReLU-projection (1×1 conv or linear), optional ReLU, optional ``pool_size`` pooling."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if norm:
        layers["norm"] = batch_norm(in_width, conv=conv)
    if activation:
        layers["relu"] = nn.ReLU(inplace=True)
    layers["conv" if conv else "linear"] = _project(in_width, out_width, conv=conv, kernel=1, bias=bias)
    if post_activation:
        layers["relu_out"] = nn.ReLU(inplace=True)
    if pool == "avg":
        layers["pool"] = nn.AvgPool2d(kernel_size=pool_size, stride=pool_size)
    elif pool == "max":
        layers["pool"] = nn.MaxPool2d(kernel_size=pool_size, stride=pool_size)
    return nn.Sequential(layers)


def conv_stem(
    *,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    bias: bool,
    norm: bool,
    activation: bool,
    pool: bool,
    pool_kernel_size: int,
    pool_stride: int,
    pool_padding: int,
) -> OrderedDict[str, nn.Module]:
    """torchvision's ``conv0``/``norm0``/``relu0``/``pool0``, to be placed in ``features``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv0"] = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
    )
    if norm:
        layers["norm0"] = nn.BatchNorm2d(out_channels)
    if activation:
        layers["relu0"] = nn.ReLU(inplace=True)
    if pool:
        layers["pool0"] = nn.MaxPool2d(pool_kernel_size, stride=pool_stride, padding=pool_padding)
    return layers


def mlp_stem(*, widths: list[int], activation: bool, bias: bool) -> OrderedDict[str, nn.Module]:
    """``linear0``, ``relu0``, ``linear1``… mapping ``widths[0]`` features to ``widths[-1]``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layers[f"linear{index}"] = nn.Linear(fan_in, fan_out, bias=bias)
        if activation:
            layers[f"relu{index}"] = nn.ReLU(inplace=True)
    return layers
