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
from archspec.format.parts import (
    ClassifierHead,
    Concat,
    ConvStem,
    DeepStem,
    DenseBlock,
    FeaturesHead,
    HeadPart,
    MLPStem,
    NormPart,
    RegressorHead,
    SegmentationHead,
    StagePart,
    Transition,
    TransitionUp,
    UNetBlock,
)
from archspec.format.parts.base import spatial_dims
from archspec.format.parts.vocabulary import Activation, activation_name, negative_slope, norm_groups, norm_name
from archspec.format.shapes import OutputShape, Stage, StaticPass
from archspec.network import DenseNet, Features, Output, Tapped
from archspec.registry import Registry


@dataclass
class _Assembly:
    """What the factories fill in, stage by stage: ``features`` in order, then the output."""

    result: StaticPass
    features: OrderedDict[str, nn.Module] = field(default_factory=OrderedDict)
    recomputed: list[str] = field(default_factory=list)
    """Names in ``features`` whose activations backward recomputes (a memory-efficient stem)."""
    points: dict[str, str] = field(default_factory=dict)
    """For each point a part declares, the qualified module whose output it is (``features.relu0``)."""
    output: Output | None = None

    def last(self) -> str:
        """The qualified name of the module added last to ``features``."""
        return f"features.{next(reversed(self.features))}"


Factory = Callable[..., None]
FACTORIES: Registry[Factory] = Registry("a factory")
register = FACTORIES.register


def _norm_act(part: StagePart) -> blocks.NormAct:
    """A part's resolved norm and activation as plain values for the modules."""
    return _activation(part.activation, norm_name(part.norm), norm_groups(part.norm))


def _activation(activation: Activation, norm: str = "none", groups: int = 0) -> blocks.NormAct:
    return blocks.NormAct(norm=norm, activation=activation_name(activation), groups=groups,
                          negative_slope=negative_slope(activation))


def _conv_stem(stage: Stage, stem: ConvStem | DeepStem, assembly: _Assembly, widths: list[int]) -> None:
    layers = blocks.conv_stem(
        widths=[stage.in_shape[0], *widths],
        dims=spatial_dims(stage.in_shape),
        kernel_size=stem.kernel_size,
        stride=stem.stride,
        padding=stem.padding,
        bias=stem.bias,
        norm_act=_norm_act(stem),
        pool=stem.pool,
        pool_kernel_size=stem.pool_kernel_size,
        pool_stride=stem.pool_stride,
        pool_padding=stem.pool_padding,
    )
    assembly.features.update(layers)
    assembly.points["activation"] = f"features.{[name for name in layers if name != 'pool0'][-1]}"
    if stem.memory_efficient:
        assembly.recomputed.extend(layers)


@register("conv_stem")
def _single_conv_stem(stage: Stage, stem: ConvStem, assembly: _Assembly) -> None:
    _conv_stem(stage, stem, assembly, [stem.out_channels])


@register("deep_stem")
def _deep_stem(stage: Stage, stem: DeepStem, assembly: _Assembly) -> None:
    _conv_stem(stage, stem, assembly, stem.widths)


@register("mlp_stem")
def _mlp_stem(stage: Stage, stem: MLPStem, assembly: _Assembly) -> None:
    assembly.features.update(
        blocks.mlp_stem(widths=[stage.in_shape[0], *stem.hidden], activation=_activation(stem.activation),
                        bias=stem.bias, drop_rate=stem.drop_rate)
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
        gradient_is_exclusive=stage.exclusive_gradient,
        keep_input=block.output == "all",
        bias=block.bias,
        dims=spatial_dims(stage.in_shape),
        kernel_size=block.kernel,
        norm_act=_norm_act(block),
    )


@register("transition")
def _transition(stage: Stage, part: Transition, assembly: _Assembly) -> None:
    before = assembly.last()
    name = f"transition{stage.number}"
    assembly.features[name] = transition = blocks.transition(
        in_width=stage.in_shape[0],
        out_width=stage.out_shape[0],
        dims=spatial_dims(stage.in_shape),
        norm_act=_norm_act(part),
        bias=part.bias,
        post_activation=_activation(part.post_activation),
        drop_rate=part.drop_rate,
        pool=part.pool,
        pool_size=part.pool_size,
    )
    activated = [child for child, _ in transition.named_children() if child.startswith(("norm", "relu", "act"))]
    assembly.points["activation"] = f"features.{name}.{activated[-1]}" if activated else before


def _head(stage: Stage, head: HeadPart, assembly: _Assembly, name: str, layer: nn.Module) -> None:
    """The head's norm into ``features``, then its activation, pooling, dropout and output ``layer``."""
    width = stage.in_shape[0]
    kind = _norm_act(head)
    norm = blocks.norm_layer(width, kind, dims=spatial_dims(stage.in_shape))
    if norm is not None:
        # torchvision, timm and MONAI all call the head's norm `features.norm5`, whatever
        # the number of blocks (a deep stem's norms stop at norm4: see deep_stem.MAX_CONVS).
        assembly.features[_norm_name(stage)] = norm
    assembly.points["norm"] = assembly.last()
    pools = head.pools
    assembly.output = Output(
        name=name,
        layer=layer,
        in_features=width,
        activation=blocks.activation_layer(kind, in_place=False),
        pool=head.pool if pools else None,
        drop_rate=head.drop_rate if pools else 0.0,
    )
    assembly.points["activation"] = "head_activation" if assembly.output.activation else assembly.points["norm"]


@register("classifier")
def _classifier(stage: Stage, head: ClassifierHead, assembly: _Assembly) -> None:
    _head(stage, head, assembly, "classifier", nn.Linear(stage.in_shape[0], head.num_classes))


@register("regressor")
def _regressor(stage: Stage, head: RegressorHead, assembly: _Assembly) -> None:
    _head(stage, head, assembly, "regressor", nn.Linear(stage.in_shape[0], head.out_features))


@register("segmentation")
def _segmentation(stage: Stage, head: SegmentationHead, assembly: _Assembly) -> None:
    classifier = blocks.projection(stage.in_shape[0], head.num_classes, dims=spatial_dims(stage.in_shape),
                                   kernel=head.kernel_size, bias=True)
    _head(stage, head, assembly, "classifier", classifier)  # a per-position classifier


@register("features")
def _features_head(stage: Stage, head: FeaturesHead, assembly: _Assembly) -> None:
    _head(stage, head, assembly, "classifier", nn.Identity())  # timm's reset_classifier(0), unpooled


def _norm_name(stage: Stage) -> str:
    """``norm5`` for the first norm part or head norm (torchvision's final norm), then ``norm6``…"""
    return f"norm{4 + stage.number}"


@register("norm")
def _norm(stage: Stage, part: NormPart, assembly: _Assembly) -> None:
    dims = spatial_dims(stage.in_shape)
    kind = _norm_act(part)
    name = _norm_name(stage)
    layers = [(name, blocks.norm_layer(stage.in_shape[0], kind, dims=dims)),
              (name.replace("norm", "act"), blocks.activation_layer(kind))]
    assembly.features.update((key, module) for key, module in layers if module is not None)


@register("transition_up")
def _transition_up(stage: Stage, part: TransitionUp, assembly: _Assembly) -> None:
    assembly.features[f"transitionup{stage.number}"] = blocks.upsampling(
        mode=part.mode, in_width=stage.in_shape[0], out_width=stage.out_shape[0], dims=spatial_dims(stage.in_shape),
        scale=part.scale, kernel_size=part.kernel_size, padding=part.padding, bias=part.bias)


@register("concat")
def _concat(stage: Stage, part: Concat, assembly: _Assembly) -> None:
    assembly.features[f"concat{stage.number}"] = blocks.Concat(fit=part.fit)


@register("unet_block")
def _unet_block(stage: Stage, part: UNetBlock, assembly: _Assembly) -> None:
    assembly.features[f"decoderblock{stage.number}"] = blocks.UNetBlock(
        in_width=stage.in_shape[0], skip_width=sum(skip[0] for skip in stage.skips), out_width=part.out_channels,
        dims=spatial_dims(stage.in_shape), kernel_size=part.kernel_size, mode=part.mode, scale=part.scale,
        norm_act=_norm_act(part))


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _initialise(model: nn.Module) -> None:
    """torchvision's DenseNet initialisation, so freshly built models match its statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, _NORMS) and module.weight is not None:
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.constant_(module.bias, 0)


def build_module(result: StaticPass) -> DenseNet:
    """Compile a spec's static pass into a ``DenseNet`` module, freshly initialised."""
    assembly = _Assembly(result)
    stage_modules: dict[str, tuple[str, ...]] = {}
    points: dict[tuple[str, str], str] = {}
    reads: dict[str, tuple[str, ...]] = {}
    for stage in result.stages:
        before = set(assembly.features)
        FACTORIES[stage.kind](stage, stage.part, assembly)
        names = tuple(f"features.{name}" for name in assembly.features if name not in before)
        stage_modules[stage.path] = names
        points.update({(stage.path, point): module for point, module in assembly.points.items()})
        points[stage.path, "output"] = names[-1] if names else assembly.last()
        assembly.points.clear()
        if stage.reads:  # a part that reads skips is one module, called with them after its input
            (name,) = names
            reads[name.removeprefix("features.")] = tuple(points[read].removeprefix("features.")
                                                          for read in stage.reads)
    assert assembly.output is not None, "the head's factory sets the output"
    stage_modules["head"] = (*stage_modules["head"], assembly.output.name)
    points["head", "output"] = assembly.output.name

    def tapped(outputs: tuple[OutputShape, ...]) -> tuple[Tapped, ...]:
        return tuple(Tapped(output.name, points[output.path, output.point], output.shape[0], output.reduction)
                     for output in outputs)

    has_maps = len(result.input_shape) > 1
    model = DenseNet(features=Features(assembly.features, tuple(assembly.recomputed), reads), output=assembly.output,
                     stage_modules=stage_modules, outputs=tapped(result.outputs) if result.named else (),
                     feature_taps=tapped(result.feature_maps()) if has_maps else ())
    # A map handed out (a named output or a skip) is an activation's own result, not its input
    # overwritten in place: tracing converters (OpenVINO's) cannot follow the in-place write back.
    handed_out = [tap.module for tap in model.outputs] + [f"features.{read}" for skips in reads.values() for read in skips]
    for name in handed_out:
        module = model.get_submodule(name)
        if getattr(module, "inplace", False):
            module.inplace = False
    _initialise(model)
    return model
