"""Spec → ``nn.Module``: a registry from part tag to factory, and the assembly.

Module names are torchvision's (``features.conv0``, ``features.denseblock1``,
``features.transition1``, ``features.norm5``, ``classifier``): weights depend on them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from archspec import blocks
from archspec.network import DenseNet
from archspec.format.schema import (
    ClassifierHead,
    ConvStem,
    DenseBlock,
    ImageInput,
    MLPStem,
    Part,
    Spec,
    Transition,
)


@dataclass
class _Assembly:
    """What the factories fill in, part by part: modules in order and the running width."""

    width: int
    modules: OrderedDict[str, nn.Module] = field(default_factory=OrderedDict)
    counts: dict[str, int] = field(default_factory=dict)

    def number(self, tag: str) -> int:
        """1-based index of the next part with this tag (``denseblock1``, ``transition1``)."""
        self.counts[tag] = self.counts.get(tag, 0) + 1
        return self.counts[tag]


Factory = Callable[[Part, _Assembly], None]
_FACTORIES: dict[str, Factory] = {}


def register(tag: str) -> Callable[[Factory], Factory]:
    """Register the factory for parts tagged ``tag``; a second registration is an error."""

    def decorate(factory: Factory) -> Factory:
        if tag in _FACTORIES:
            raise ValueError(f"a factory for {tag!r} is already registered")
        _FACTORIES[tag] = factory
        return factory

    return decorate


@register("conv_stem")
def _conv_stem(stem: ConvStem, assembly: _Assembly) -> None:
    assembly.modules.update(
        blocks.conv_stem(
            in_channels=assembly.width,
            out_channels=stem.out_channels,
            kernel_size=stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            bias=stem.bias,
            norm=stem.norm == "batch_norm",
            activation=stem.activation == "relu",
            pool=stem.pool == "max",
            pool_kernel_size=stem.pool_kernel_size,
            pool_stride=stem.pool_stride,
            pool_padding=stem.pool_padding,
        )
    )
    assembly.width = stem.out_channels


@register("mlp_stem")
def _mlp_stem(stem: MLPStem, assembly: _Assembly) -> None:
    assembly.modules.update(
        blocks.mlp_stem(
            widths=[assembly.width, *stem.hidden],
            activation=stem.activation == "relu",
            bias=stem.bias,
        )
    )
    assembly.width = stem.hidden[-1]


@register("dense_block")
def _dense_block(block: DenseBlock, assembly: _Assembly) -> None:
    name = f"denseblock{assembly.number('dense_block')}"
    assembly.modules[name] = blocks.DenseBlock(
        num_layers=block.num_layers,
        in_width=assembly.width,
        growth_rate=block.growth_rate,
        bn_size=block.bn_size,
        drop_rate=block.drop_rate,
        memory_efficient=block.memory_efficient,
        bias=block.bias,
        conv=block.layer == "conv",
    )
    assembly.width += block.num_layers * block.growth_rate


@register("transition")
def _transition(part: Transition, assembly: _Assembly) -> None:
    out_width = part.out_width(assembly.width)
    assembly.modules[f"transition{assembly.number('transition')}"] = blocks.transition(
        in_width=assembly.width,
        out_width=out_width,
        conv=part.layer == "conv",
        norm=part.norm == "batch_norm",
        activation=part.activation == "relu",
        bias=part.bias,
        pool=part.pool,
        post_activation=part.post_activation == "relu",
    )
    assembly.width = out_width


def _initialise(model: nn.Module) -> None:
    """torchvision's DenseNet initialisation, so freshly built models match its statistics."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.constant_(module.bias, 0)


def build_module(spec: Spec) -> DenseNet:
    """Compile a validated spec into a ``DenseNet`` module, freshly initialised."""
    image = isinstance(spec.input, ImageInput)
    assembly = _Assembly(width=spec.input.channels if image else spec.input.features)
    stage_modules: dict[str, tuple[str, ...]] = {}
    for path, part in [("stem", spec.stem), *((f"body[{i}]", p) for i, p in enumerate(spec.body))]:
        before = set(assembly.modules)
        _FACTORIES[part.type](part, assembly)
        stage_modules[path] = tuple(f"features.{n}" for n in assembly.modules if n not in before)

    head = spec.head
    head_modules: tuple[str, ...] = ()
    if head.norm == "batch_norm":
        # torchvision calls the head's norm `features.norm5` after four blocks.
        norm_name = f"norm{assembly.counts['dense_block'] + 1}"
        assembly.modules[norm_name] = (nn.BatchNorm2d if image else nn.BatchNorm1d)(assembly.width)
        head_modules = (f"features.{norm_name}",)
    classifier = isinstance(head, ClassifierHead)
    output_name = "classifier" if classifier else "regressor"
    outputs = head.num_classes if classifier else head.out_features
    stage_modules["head"] = (*head_modules, output_name)

    model = DenseNet(
        features=nn.Sequential(assembly.modules),
        output=nn.Linear(assembly.width, outputs),
        output_name=output_name,
        activation=head.activation == "relu",
        global_pool=image,
        stage_modules=stage_modules,
    )
    _initialise(model)
    return model
