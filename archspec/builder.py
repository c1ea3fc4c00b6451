"""Static pass → ``nn.Module``: a registry from part tag to torch factory, and the assembly.

Module names are torchvision's (``features.conv0``, ``features.denseblock1``,
``features.transition1``, ``features.norm5``, ``classifier``): weights depend on them.
Factories read a stage (its resolved part, shapes and number) and hand plain keyword
arguments to the modules in ``blocks.py``, which never see spec objects.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from archspec import blocks
from archspec.format.parts import ClassifierHead, ConvStem, DenseBlock, MLPStem, RegressorHead, Transition
from archspec.format.parts.transition import POOL
from archspec.format.shapes import Stage, StaticPass
from archspec.network import DenseNet, Output


@dataclass
class _Assembly:
    """What the factories fill in, stage by stage: ``features`` in order, then the output."""

    result: StaticPass
    features: OrderedDict[str, nn.Module] = field(default_factory=OrderedDict)
    output: Output | None = None


Factory = Callable[..., None]
FACTORIES: dict[str, Factory] = {}


def register(tag: str) -> Callable[[Factory], Factory]:
    """Register the factory for parts tagged ``tag``; a second registration is an error."""

    def decorate(factory: Factory) -> Factory:
        if tag in FACTORIES:
            raise ValueError(f"a factory for {tag!r} is already registered")
        FACTORIES[tag] = factory
        return factory

    return decorate


@register("conv_stem")
def _conv_stem(stage: Stage, stem: ConvStem, assembly: _Assembly) -> None:
    assembly.features.update(
        blocks.conv_stem(
            in_channels=stage.in_shape[0],
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


@register("mlp_stem")
def _mlp_stem(stage: Stage, stem: MLPStem, assembly: _Assembly) -> None:
    assembly.features.update(
        blocks.mlp_stem(
            widths=[stage.in_shape[0], *stem.hidden], activation=stem.activation == "relu", bias=stem.bias
        )
    )


@register("dense_block")
def _dense_block(stage: Stage, block: DenseBlock, assembly: _Assembly) -> None:
    assembly.features[f"denseblock{stage.number}"] = blocks.DenseBlock(
        num_layers=block.num_layers,
        in_width=stage.in_shape[0],
        growth_rate=block.growth_rate,
        bn_size=block.bn_size,
        drop_rate=block.drop_rate,
        memory_efficient=block.memory_efficient,
        bias=block.bias,
        conv=block.layer == "conv",
        kernel_size=block.kernel,
    )


@register("transition")
def _transition(stage: Stage, part: Transition, assembly: _Assembly) -> None:
    assembly.features[f"transition{stage.number}"] = blocks.transition(
        in_width=stage.in_shape[0],
        out_width=stage.out_shape[0],
        conv=part.layer == "conv",
        norm=part.norm == "batch_norm",
        activation=part.activation == "relu",
        bias=part.bias,
        pool=part.pool,
        pool_size=POOL,
        post_activation=part.post_activation == "relu",
    )


def _head(stage: Stage, head: ClassifierHead | RegressorHead, assembly: _Assembly, name: str) -> None:
    width = stage.in_shape[0]
    if head.norm == "batch_norm":
        # torchvision calls the head's norm `features.norm5` after four blocks.
        number = assembly.result.dense_blocks + 1
        assembly.features[f"norm{number}"] = blocks.batch_norm(width, conv=len(stage.in_shape) > 1)
    assembly.output = Output(
        name=name,
        linear=nn.Linear(width, stage.out_shape[0]),
        activation=head.activation == "relu",
        global_pool=len(stage.in_shape) > 1,
    )


@register("classifier")
def _classifier(stage: Stage, head: ClassifierHead, assembly: _Assembly) -> None:
    _head(stage, head, assembly, "classifier")


@register("regressor")
def _regressor(stage: Stage, head: RegressorHead, assembly: _Assembly) -> None:
    _head(stage, head, assembly, "regressor")


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


def build_module(result: StaticPass) -> DenseNet:
    """Compile a spec's static pass into a ``DenseNet`` module, freshly initialised."""
    assembly = _Assembly(result)
    stage_modules: dict[str, tuple[str, ...]] = {}
    for stage in result.stages:
        before = set(assembly.features)
        FACTORIES[stage.kind](stage, stage.part, assembly)
        names = tuple(f"features.{name}" for name in assembly.features if name not in before)
        stage_modules[stage.path] = names
    assert assembly.output is not None, "the head's factory sets the output"
    stage_modules["head"] = (*stage_modules["head"], assembly.output.name)
    model = DenseNet(features=nn.Sequential(assembly.features), output=assembly.output,
                     stage_modules=stage_modules)
    _initialise(model)
    return model
