"""The assembled network: the one model surface every built spec answers to (timm's meanings),
and the features-only backbone that returns maps taken at points of it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archspec.blocks import checkpointed


OUTPUT_LAYERS = ("classifier", "regressor")
"""Names of the output layer a head adds (torchvision's ``classifier``): what fine-tuning replaces."""


@dataclass(frozen=True)
class Output:
    """The head after ``features``: activation, global pooling of feature maps, dropout, the output layer."""

    name: str
    """``classifier`` (torchvision's name) or ``regressor``."""
    layer: nn.Module
    """A Linear after global pooling, or a convolution over every position (segmentation)."""
    in_features: int
    activation: nn.Module | None
    pool: str | None
    """``avg``, ``max`` or ``avg_max`` (their mean), over every spatial axis; ``None``: no pooling."""
    drop_rate: float


@dataclass(frozen=True)
class Tapped:
    """One output of the network: its name and the module whose output it is."""

    name: str
    module: str
    """Qualified module name (``features.relu0``, ``features.transition1.relu``, ``head_activation``)."""
    channels: int
    reduction: int


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


def _run(modules: nn.Module, x: Tensor, taps: Collection[str], recomputed: Collection[str],
         captured: dict[str, Tensor], reads: Mapping[str, tuple[str, ...]]) -> Tensor:
    """Run ``modules``' children in order, keeping the output of each module named in ``taps``.

    A tap inside a child (``transition1.relu``) is kept by a forward hook for this call, so the
    child runs as it always does. A child named in ``reads`` is called with the outputs it reads
    (its skips) after its input. Consecutive children named in ``recomputed`` keep only their
    input for backward (a memory-efficient stem), cut at each tap.
    """
    pending: OrderedDict[str, nn.Module] = OrderedDict()

    def flush(x: Tensor) -> Tensor:
        if pending:
            x = checkpointed(nn.Sequential(pending.copy()), x)
            pending.clear()
        return x

    def keep(name: str) -> Callable[..., None]:
        return lambda _module, _inputs, output: captured.__setitem__(name, output)

    hooks = [modules.get_submodule(tap).register_forward_hook(keep(tap)) for tap in taps if "." in tap]
    try:
        for name, module in modules.named_children():
            if name in reads:
                x = module(flush(x), *(captured[read] for read in reads[name]))
            elif name in recomputed and not any(tap.startswith(f"{name}.") for tap in taps):
                pending[name] = module
            else:
                x = module(flush(x))
            if name in taps:
                x = captured[name] = flush(x)
        return flush(x)
    finally:
        for hook in hooks:
            hook.remove()


class Features(nn.Sequential):
    """torchvision's flat ``features``. In training with gradients, each run of consecutive
    modules named in ``recomputed`` (a memory-efficient stem) keeps only its input for backward,
    which recomputes the run; module names, and so the state dict, stay flat."""

    def __init__(self, modules: OrderedDict[str, nn.Module], recomputed: tuple[str, ...] = (),
                 reads: Mapping[str, tuple[str, ...]] | None = None):
        super().__init__(modules)
        self.recomputed = recomputed
        self.reads = dict(reads or {})
        """For each module that reads skips, the modules whose outputs it reads (``transition1.relu``)."""

    def taps(self, x: Tensor, taps: Collection[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """The features of ``x``, and the output of each module named in ``taps`` (``denseblock1``,
        ``transition1.relu``). Grouped from the modules held now, so a replaced module is the one run."""
        recomputing = self.recomputed if self.training and torch.is_grad_enabled() else ()
        wanted = {*taps, *(read for skips in self.reads.values() for read in skips)}
        captured: dict[str, Tensor] = {}
        return _run(self, x, wanted, recomputing, captured, self.reads), captured

    def forward(self, x: Tensor) -> Tensor:
        if not (self.reads or (self.recomputed and self.training and torch.is_grad_enabled())):
            return super().forward(x)
        return self.taps(x, ())[0]


class FeatureInfo:
    """timm's ``feature_info`` of a features-only network: what each returned map is."""

    def __init__(self, taps: Sequence[Tapped]):
        self.taps = tuple(taps)

    def channels(self) -> list[int]:
        """Channels of each map."""
        return [tap.channels for tap in self.taps]

    def reduction(self) -> list[int]:
        """Input size over each map's size."""
        return [tap.reduction for tap in self.taps]

    def module_name(self) -> list[str]:
        """The module whose output each map is."""
        return [tap.module for tap in self.taps]

    def __len__(self) -> int:
        return len(self.taps)

    def __getitem__(self, index: int) -> dict[str, object]:
        tap = self.taps[index]
        return {"num_chs": tap.channels, "reduction": tap.reduction, "module": tap.module}


class DenseNet(nn.Module):
    """``features`` (stem, dense blocks, transitions, head norm) then the output layer.

    Top-level names match torchvision (``features``, ``classifier``) so its weights load
    strictly; a regression head's layer is named ``regressor``. The methods are timm's.

    Attributes:
        num_features: width of the features the output layer reads.
        stage_modules: for each spec part (``stem``, ``body[0]``…, ``head``), the
            qualified names of the modules that implement it, in order.
        outputs: the spec's named outputs; empty when the network returns the head's output.
        feature_taps: timm's ``features_only`` maps (``forward_intermediates``' indices).
    """

    def __init__(self, *, features: Features, output: Output, stage_modules: dict[str, tuple[str, ...]],
                 outputs: tuple[Tapped, ...] = (), feature_taps: tuple[Tapped, ...] = ()):
        super().__init__()
        self.features = features
        self.head_activation = output.activation  # no parameters: absent from the state dict
        self.add_module(output.name, output.layer)
        self.output_name = output.name
        self.pool = output.pool
        self.drop_rate = output.drop_rate
        self.num_features = output.in_features
        self.stage_modules = stage_modules
        self.outputs = outputs
        self.feature_taps = feature_taps

    @property
    def feature_info(self) -> list[dict[str, object]]:
        """timm's list of ``num_chs``, ``reduction`` and ``module`` for each feature map."""
        return list(FeatureInfo(self.feature_taps))

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before global pooling, the head's norm and activation included (timm's meaning)."""
        x = self.features(x)
        return x if self.head_activation is None else self.head_activation(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global pooling of feature maps (not for a segmentation head), dropout, then the output
        layer unless ``pre_logits``."""
        if self.pool is not None and x.dim() > 2:
            x = global_pool(x, self.pool)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        """The output layer (``classifier`` or ``regressor``)."""
        return getattr(self, self.output_name)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh output layer of the same kind with ``num_classes`` outputs (0: ``nn.Identity``).

        Raises:
            ValueError: a features head, which has no output layer to size.
        """
        old = self.get_classifier()
        if num_classes == 0:
            layer = nn.Identity()
        elif self.pool is not None:
            layer = nn.Linear(self.num_features, num_classes)
        elif isinstance(old, nn.modules.conv._ConvNd):  # a segmentation head's per-position classifier
            layer = type(old)(self.num_features, num_classes, old.kernel_size, padding=old.padding)
        else:
            raise ValueError("a features head has no output layer; use a segmentation or classifier head")
        if getattr(layer, "bias", None) is not None:
            nn.init.constant_(layer.bias, 0)
        setattr(self, self.output_name, layer)

    def tapped(self, x: Tensor, taps: Collection[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """``forward_features(x)`` and the output of each module named in ``taps`` (qualified names)."""
        return _tapped(self.features, self.head_activation, x, taps)

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None,
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's: the feature maps at ``indices`` (the last ``n`` for an int, all for ``None``),
        with ``forward_features(x)`` first unless ``intermediates_only``."""
        taps = _take(self.feature_taps, indices)
        x, maps = self.tapped(x, [tap.module for tap in taps])
        intermediates = [maps[tap.module] for tap in taps]
        return intermediates if intermediates_only else (x, intermediates)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        if not self.outputs:
            return self.forward_head(self.forward_features(x))
        features, maps = self.tapped(x, [tap.module for tap in self.outputs])
        if any(tap.module == self.output_name for tap in self.outputs):
            maps[self.output_name] = self.forward_head(features)
        return {tap.name: maps[tap.module] for tap in self.outputs}


def _tapped(features: Features, head_activation: nn.Module | None, x: Tensor,
            taps: Collection[str]) -> tuple[Tensor, dict[str, Tensor]]:
    inside = {tap.removeprefix("features.") for tap in taps if tap.startswith("features.")}
    x, captured = features.taps(x, inside)
    maps = {f"features.{name}": value for name, value in captured.items()}
    if head_activation is not None:
        x = maps["head_activation"] = head_activation(x)
    return x, maps


def _take(taps: tuple[Tapped, ...], indices: int | Sequence[int] | None) -> tuple[Tapped, ...]:
    """timm's ``indices``: ``None`` all, an int the last ``n``, a sequence those (negative from the end)."""
    if indices is None:
        return taps
    if isinstance(indices, int):
        chosen = range(len(taps) - indices, len(taps))
    else:
        chosen = [index % len(taps) if -len(taps) <= index < len(taps) else index for index in indices]
    if any(not 0 <= index < len(taps) for index in chosen):
        raise ValueError(f"feature indices {list(indices) if not isinstance(indices, int) else indices} "
                         f"outside the {len(taps)} maps")
    return tuple(taps[index] for index in chosen)


class Backbone(nn.Module):
    """timm's ``features_only`` network: the feature maps at ``out_indices``, as a list.

    It holds the built network's ``features`` (and head activation) under the same names, so a
    full checkpoint loads with ``skip_head=True``; the output layer is dropped.
    """

    def __init__(self, network: DenseNet, out_indices: Sequence[int] | None = None):
        super().__init__()
        self.features = network.features
        self.head_activation = network.head_activation
        self.taps = _take(network.feature_taps, out_indices)
        self.feature_info = FeatureInfo(self.taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        _, maps = _tapped(self.features, self.head_activation, x, [tap.module for tap in self.taps])
        return [maps[tap.module] for tap in self.taps]
