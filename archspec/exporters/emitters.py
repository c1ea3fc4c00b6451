"""Static pass + built module → ONNX graph, written directly: one emitter per kind of part.

Why not ``torch.onnx.export``: the spec already describes the whole graph, so tracing it
again is wasted work. For DenseNet-121 with dynamic batch, height and width the dynamo
exporter took 42 s and the TorchScript one (deprecated) about 1 s; writing the nodes here
takes 0.1 s (docs/performance.md). It also gives exact control of the opset (every node is
chosen for the opset asked for, from 13 up: the torch exporters wrote opset 18 when 17 was
asked), and frees the file from the exporters' regressions and the TorchScript exporter's
deprecation.

``EMITTERS[tag]`` is registered against the same part tags as the torch factories in
``archspec/builder.py`` (a second registration is refused, and a test fails for a tag
without one). An emitter reads the stage (shapes, number), the stage's modules as the
builder made them (``model.stage_modules[stage.path]``) and appends nodes to a ``Graph``;
every weight and running statistic is taken from the modules, never recomputed. Inside a
part, each torch module becomes its ONNX nodes through ``_MODULES``, keyed by module type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from torch import nn

from archspec.blocks import BlurPool
from archspec.errors import RunError, first_line
from archspec.exporters.graph import Dims, Graph
from archspec.registry import Registry
from archspec.format.parts.base import spatial_dims
from archspec.format.shapes import Stage, StaticPass
from archspec.network import DenseNet

# ---- torch modules → nodes ------------------------------------------------------------

ModuleEmitter = Callable[[Graph, str, nn.Module, str, int], str]
"""``(graph, x, module, name, dims) → y``; ``dims`` is the spatial rank (0 for feature vectors)."""

_MODULES: dict[type[nn.Module], ModuleEmitter] = {}

GELU_OPSET = 20  # the Gelu operator; below it, the erf form torch computes
LAYER_NORM_OPSET = 17  # the LayerNormalization operator; below it, its mean and variance
REDUCE_AXES_INPUT_OPSET = 18  # ReduceMean and ReduceMax read their axes from an input; below it, an attribute


def _module(*kinds: type[nn.Module]) -> Callable[[ModuleEmitter], ModuleEmitter]:
    def decorate(emitter: ModuleEmitter) -> ModuleEmitter:
        for kind in kinds:
            _MODULES[kind] = emitter
        return emitter

    return decorate


def emit_module(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    """The nodes of one torch module (its qualified ``name``) applied to the value ``x``."""
    emitter = _MODULES.get(type(module))
    if emitter is None:
        raise RunError(f"no ONNX emitter for the torch module {name} ({type(module).__name__})")
    graph.values[name] = y = emitter(graph, x, module, name, dims)
    return y


def _window(value: int | tuple[int, ...], dims: int) -> list[int]:
    """A kernel, stride or padding as torch may give it (an int or a tuple) as one value per axis."""
    return list(value) if isinstance(value, tuple) else [value] * dims


@_module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(graph: Graph, x: str, conv: nn.Module, name: str, dims: int) -> str:
    inputs = [x, graph.weight(f"{name}.weight", conv.weight)]
    if conv.bias is not None:
        inputs.append(graph.weight(f"{name}.bias", conv.bias))
    return graph.op("Conv", inputs, name=name, kernel_shape=_window(conv.kernel_size, dims),
                    strides=_window(conv.stride, dims), pads=_window(conv.padding, dims) * 2,
                    dilations=_window(conv.dilation, dims), group=conv.groups)


@_module(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose(graph: Graph, x: str, conv: nn.Module, name: str, dims: int) -> str:
    inputs = [x, graph.weight(f"{name}.weight", conv.weight)]  # (in, out, *kernel), as torch keeps it
    if conv.bias is not None:
        inputs.append(graph.weight(f"{name}.bias", conv.bias))
    return graph.op("ConvTranspose", inputs, name=name, kernel_shape=_window(conv.kernel_size, dims),
                    strides=_window(conv.stride, dims), pads=_window(conv.padding, dims) * 2,
                    output_padding=_window(conv.output_padding, dims), dilations=_window(conv.dilation, dims),
                    group=conv.groups)


def _resize(graph: Graph, x: str, mode: str, name: str, dims: int, *, scale: int | None = None,
            like: str | None = None) -> str:
    """``x`` interpolated by ``scale`` along every spatial axis, or to ``like``'s spatial size, as
    ``F.interpolate`` does: nearest as torch's (floor of the asymmetric source index), linear
    with ``align_corners: false`` (ONNX's ``half_pixel``)."""
    onnx_mode = "nearest" if mode == "nearest" else "linear"
    transform = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"} if mode == "nearest" \
        else {"coordinate_transformation_mode": "half_pixel"}
    if like is None:
        scales = graph.constant([1.0, 1.0, *[float(scale)] * dims])
        return graph.op("Resize", [x, "", scales], name=name, mode=onnx_mode, **transform)
    batch_channels = _shape_slice(graph, x, 0, 2, f"{name}/batch_channels")
    spatial = _shape_slice(graph, like, 2, 2 + dims, f"{name}/skip_size")
    sizes = graph.op("Concat", [batch_channels, spatial], name=f"{name}/sizes", axis=0)
    return graph.op("Resize", [x, "", "", sizes], name=name, mode=onnx_mode, **transform)


def _shape_slice(graph: Graph, x: str, start: int, end: int, name: str) -> str:
    """Axes ``start`` to ``end`` of ``x``'s shape, as an int64 vector."""
    shape = graph.op("Shape", [x], name=f"{name}/shape")
    return graph.op("Slice", [shape, graph.constant([start], dtype=np.int64), graph.constant([end], dtype=np.int64)],
                    name=name)


@_module(nn.Upsample)
def _upsample(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return _resize(graph, x, "nearest" if module.mode == "nearest" else "linear", name, dims,
                   scale=int(module.scale_factor))


@_module(nn.Linear)
def _linear(graph: Graph, x: str, linear: nn.Module, name: str, dims: int) -> str:
    inputs = [x, graph.weight(f"{name}.weight", linear.weight)]  # (out, in): transB
    if linear.bias is not None:
        inputs.append(graph.weight(f"{name}.bias", linear.bias))
    return graph.op("Gemm", inputs, name=name, transB=1)


@_module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(graph: Graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    keys = ("weight", "bias", "running_mean", "running_var")
    inputs = [x, *(graph.weight(f"{name}.{key}", getattr(norm, key)) for key in keys)]
    return graph.op("BatchNormalization", inputs, name=name, epsilon=norm.eps)


@_module(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm(graph: Graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    inputs = [x, graph.weight(f"{name}.weight", norm.weight), graph.weight(f"{name}.bias", norm.bias)]
    return graph.op("InstanceNormalization", inputs, name=name, epsilon=norm.eps)


def _per_channel(graph: Graph, tensor: nn.Parameter, key: str, dims: int) -> str:
    """A ``(C,)`` parameter shaped ``(C, 1, …)`` to broadcast over a ``(N, C, *spatial)`` value."""
    return graph.weight(key, tensor.reshape(tensor.shape[0], *[1] * dims))


@_module(nn.GroupNorm)
def _group_norm(graph: Graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    # GroupNormalization exists only from opset 18 (and changed meaning in 21): instead,
    # (N, C, *spatial) → (N, G, rest), an instance norm per group, back, then the affine.
    groups = norm.num_groups
    grouped = graph.op("Reshape", [x, graph.constant([0, groups, -1], dtype=np.int64)], name=f"{name}/group")
    unit = [graph.constant([1.0] * groups), graph.constant([0.0] * groups)]
    normalised = graph.op("InstanceNormalization", [grouped, *unit], name=f"{name}/normalise", epsilon=norm.eps)
    shape = graph.op("Shape", [x], name=f"{name}/shape")
    restored = graph.op("Reshape", [normalised, shape], name=f"{name}/ungroup")
    scaled = graph.op("Mul", [restored, _per_channel(graph, norm.weight, f"{name}.weight", dims)], name=f"{name}/scale")
    return graph.op("Add", [scaled, _per_channel(graph, norm.bias, f"{name}.bias", dims)], name=name)


@_module(nn.LayerNorm)
def _layer_norm(graph: Graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    weight, bias = graph.weight(f"{name}.weight", norm.weight), graph.weight(f"{name}.bias", norm.bias)
    if graph.opset >= LAYER_NORM_OPSET:
        return graph.op("LayerNormalization", [x, weight, bias], name=name, axis=-1, epsilon=norm.eps)
    # Over the last axis (feature vectors: layer norm is refused on feature maps). ReduceMean
    # takes its axes as an attribute below opset 18, and this path runs below 17 only.
    mean = graph.op("ReduceMean", [x], name=f"{name}/mean", axes=[-1], keepdims=1)
    centred = graph.op("Sub", [x, mean], name=f"{name}/centre")
    square = graph.op("Mul", [centred, centred], name=f"{name}/square")
    variance = graph.op("ReduceMean", [square], name=f"{name}/variance", axes=[-1], keepdims=1)
    shifted = graph.op("Add", [variance, graph.constant(norm.eps)], name=f"{name}/epsilon")
    deviation = graph.op("Sqrt", [shifted], name=f"{name}/deviation")
    normalised = graph.op("Div", [centred, deviation], name=f"{name}/normalise")
    scaled = graph.op("Mul", [normalised, weight], name=f"{name}/scale")
    return graph.op("Add", [scaled, bias], name=name)


@_module(nn.ReLU)
def _relu(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return graph.op("Relu", [x], name=name)


@_module(nn.ReLU6)
def _relu6(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    bounds = graph.constant(float(module.min_val)), graph.constant(float(module.max_val))
    return graph.op("Clip", [x, *bounds], name=name)


@_module(nn.LeakyReLU)
def _leaky_relu(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return graph.op("LeakyRelu", [x], name=name, alpha=float(module.negative_slope))


@_module(nn.ELU)
def _elu(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return graph.op("Elu", [x], name=name, alpha=float(module.alpha))


@_module(nn.GELU)
def _gelu(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    if graph.opset >= GELU_OPSET:
        return graph.op("Gelu", [x], name=name, approximate=module.approximate)
    # torch's exact GELU: x · ½ · (1 + erf(x / √2))
    scaled = graph.op("Div", [x, graph.constant(math.sqrt(2.0))], name=f"{name}/scale")
    erf = graph.op("Erf", [scaled], name=f"{name}/erf")
    shifted = graph.op("Add", [erf, graph.constant(1.0)], name=f"{name}/shift")
    gated = graph.op("Mul", [x, shifted], name=f"{name}/gate")
    return graph.op("Mul", [gated, graph.constant(0.5)], name=name)


@_module(nn.SiLU)
def _silu(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    gate = graph.op("Sigmoid", [x], name=f"{name}/sigmoid")
    return graph.op("Mul", [x, gate], name=name)


@_module(nn.Identity)
def _identity(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return x


@_module(nn.Dropout)
def _dropout(graph: Graph, x: str, module: nn.Module, name: str, dims: int) -> str:
    return x  # the file runs the network in eval mode, where dropout is the identity


@_module(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(graph: Graph, x: str, pool: nn.Module, name: str, dims: int) -> str:
    return graph.op("MaxPool", [x], name=name, kernel_shape=_window(pool.kernel_size, dims),
                    strides=_window(pool.stride, dims), pads=_window(pool.padding, dims) * 2,
                    dilations=_window(pool.dilation, dims), ceil_mode=int(pool.ceil_mode))


@_module(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(graph: Graph, x: str, pool: nn.Module, name: str, dims: int) -> str:
    return graph.op("AveragePool", [x], name=name, kernel_shape=_window(pool.kernel_size, dims),
                    strides=_window(pool.stride, dims), pads=_window(pool.padding, dims) * 2,
                    ceil_mode=int(pool.ceil_mode), count_include_pad=int(pool.count_include_pad))


@_module(BlurPool)
def _blur_pool(graph: Graph, x: str, pool: BlurPool, name: str, dims: int) -> str:
    # Pad's pads list every axis, batch and channel included: begins, then ends.
    pads = ([0, 0] + [pool.taps // 2] * dims) * 2
    padded = graph.op("Pad", [x, graph.constant(pads, dtype=np.int64)], name=f"{name}/pad", mode="reflect")
    return graph.op("Conv", [padded, graph.weight(f"{name}.filt", pool.filt)], name=name,
                    kernel_shape=[pool.taps] * dims, strides=[pool.stride] * dims, group=pool.filt.shape[0])


@_module(nn.Sequential)
def _sequence(graph: Graph, x: str, sequence: nn.Module, name: str, dims: int) -> str:
    for child, module in sequence.named_children():
        x = emit_module(graph, x, module, f"{name}.{child}", dims)
    return x


# ---- parts → nodes ----------------------------------------------------------------------


@dataclass(frozen=True)
class StageModules:
    """The built network's modules for one stage, in order, by qualified name."""

    network: DenseNet
    names: tuple[str, ...]

    def __iter__(self) -> Iterator[tuple[str, nn.Module]]:
        for name in self.names:
            yield name, self.network.get_submodule(name)


Emitter = Callable[[Stage, StageModules, Graph, str], str]
"""``(stage, modules, graph, x) → y``: append the stage's nodes reading ``x``, return its output."""
EMITTERS: Registry[Emitter] = Registry("an ONNX emitter")
register = EMITTERS.register


@register("conv_stem")
@register("deep_stem")
@register("mlp_stem")
@register("transition")
@register("norm")
def _in_order(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    """Stems and transitions: their modules one after the other, as their ``Sequential`` runs them."""
    dims = spatial_dims(stage.in_shape)
    for name, module in modules:
        x = emit_module(graph, x, module, name, dims)
    return x


@register("dense_block")
def _dense_block(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    """Each layer reads one ``Concat`` of every earlier feature map, as ``torch.cat(features)`` does.

    Carrying one growing concatenation instead ran DenseNet-121 no faster in onnxruntime
    (docs/export.md), so the graph keeps the module's form.
    """
    dims = spatial_dims(stage.in_shape)
    ((name, block),) = modules
    features = [x]
    for layer_name, layer in block.named_children():
        prefix = f"{name}.{layer_name}"
        y = graph.op("Concat", features, name=f"{prefix}/concat", axis=1) if len(features) > 1 else x
        for child, module in layer.named_children():  # the layer's Sequential; its dropout is off in eval
            y = emit_module(graph, y, module, f"{prefix}.{child}", dims)
        features.append(y)
    kept = features if block.keep_input else features[1:]  # ``output: new``: the layers' features only
    return graph.op("Concat", kept, name=f"{name}/concat", axis=1) if len(kept) > 1 else kept[0]


def _reduce_spatial(graph: Graph, op_type: str, x: str, name: str, dims: int) -> str:
    """``op_type`` (``ReduceMean``, ``ReduceMax``) over every spatial axis, each kept as size 1.

    Not ``GlobalAveragePool`` / ``GlobalMaxPool``: OpenCV 5.0 refuses those on a 5-D tensor
    (a volume), and one form for every rank leaves no special case for 3D.
    """
    axes = list(range(2, 2 + dims))
    if graph.opset >= REDUCE_AXES_INPUT_OPSET:
        return graph.op(op_type, [x, graph.constant(axes, dtype=np.int64)], name=name, keepdims=1)
    return graph.op(op_type, [x], name=name, axes=axes, keepdims=1)


def _global_average(graph: Graph, x: str, name: str, dims: int) -> str:
    return _reduce_spatial(graph, "ReduceMean", x, f"{name}/avg", dims)


def _global_max(graph: Graph, x: str, name: str, dims: int) -> str:
    return _reduce_spatial(graph, "ReduceMax", x, f"{name}/max", dims)


def _global_average_max(graph: Graph, x: str, name: str, dims: int) -> str:
    pools = [_global_average(graph, x, name, dims), _global_max(graph, x, name, dims)]
    summed = graph.op("Add", pools, name=f"{name}/sum")
    return graph.op("Mul", [summed, graph.constant(0.5)], name=f"{name}/avg_max")


_GLOBAL_POOLS = {"avg": _global_average, "max": _global_max, "avg_max": _global_average_max}
"""``network.pool`` → the nodes that pool ``(N, C, *spatial)`` to ``(N, C, 1, …)``."""


@register("classifier")
@register("regressor")
@register("segmentation")
@register("features")
def _head(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    """The head's norm (``features.normK``), activation, global pooling and flatten (not for a
    segmentation head), output layer."""
    dims = spatial_dims(stage.in_shape)
    *norms, (output_name, output) = modules
    for name, module in norms:
        x = emit_module(graph, x, module, name, dims)
    network = modules.network
    if network.head_activation is not None:
        x = emit_module(graph, x, network.head_activation, "head_activation", dims)
    if dims and network.pool is not None:
        pooled = _GLOBAL_POOLS[network.pool](graph, x, "pool", dims)
        x = graph.op("Flatten", [pooled], name="flatten", axis=1)
        dims = 0
    return emit_module(graph, x, output, output_name, dims)  # dropout before it is off in eval


def _skips(modules: StageModules, graph: Graph) -> tuple[str, list[str]]:
    """A skip-reading stage's one module name, and the values of the maps it reads."""
    ((name, _),) = modules
    reads = modules.network.features.reads[name.removeprefix("features.")]
    return name, [graph.values[f"features.{read}"] for read in reads]


@register("transition_up")
def _transition_up(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    ((name, module),) = modules
    return emit_module(graph, x, module, name, spatial_dims(stage.in_shape))


@register("concat")
def _concat(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    """``Concat([input, skip])``, the input's centre cut out (``Slice``) or zero-padded (``Pad``) to
    the skip's size first, computed from the two shapes at run time so any size exports."""
    name, (skip,) = _skips(modules, graph)
    dims = spatial_dims(stage.in_shape)
    fit = stage.part.fit
    if fit != "none":
        have = _shape_slice(graph, x, 2, 2 + dims, f"{name}/in_size")
        want = _shape_slice(graph, skip, 2, 2 + dims, f"{name}/skip_size")
        difference = graph.op("Sub", [have, want] if fit == "crop" else [want, have], name=f"{name}/difference")
        before = graph.op("Div", [difference, graph.constant([2] * dims, dtype=np.int64)], name=f"{name}/before")
        if fit == "crop":
            end = graph.op("Add", [before, want], name=f"{name}/end")
            axes = graph.constant(list(range(2, 2 + dims)), dtype=np.int64)
            x = graph.op("Slice", [x, before, end, axes], name=f"{name}/crop")
        else:
            after = graph.op("Sub", [difference, before], name=f"{name}/after")
            zeros = graph.constant([0, 0], dtype=np.int64)
            pads = graph.op("Concat", [zeros, before, zeros, after], name=f"{name}/pads", axis=0)
            x = graph.op("Pad", [x, pads], name=f"{name}/pad", mode="constant")
    return graph.op("Concat", [x, skip], name=name, axis=1)


@register("unet_block")
def _unet_block(stage: Stage, modules: StageModules, graph: Graph, x: str) -> str:
    """Resize to the skip's size (or by the scale), ``Concat`` the skip, then ``conv1`` and ``conv2``."""
    dims = spatial_dims(stage.in_shape)
    ((name, block),) = modules
    mode = "nearest" if block.mode == "nearest" else "linear"
    if stage.reads:
        _, (skip,) = _skips(modules, graph)
        upsampled = _resize(graph, x, mode, f"{name}/upsample", dims, like=skip)
        x = graph.op("Concat", [upsampled, skip], name=f"{name}/concat", axis=1)
    else:
        x = _resize(graph, x, mode, f"{name}/upsample", dims, scale=block.scale)
    for child in ("conv1", "conv2"):
        x = emit_module(graph, x, getattr(block, child), f"{name}.{child}", dims)
    return x


def emit(result: StaticPass, network: DenseNet, *, opset: int, input_name: str, input_dims: Dims,
         outputs: Sequence[tuple[str, Dims]], step: Callable[[str], None] = lambda _: None) -> onnx.ModelProto:
    """The ONNX model of ``network`` (built from ``result``, in eval mode) at ``opset``.

    Args:
        result: the static pass the network was built from.
        network: the built module; its weights and statistics go into the file as they are.
        opset: the default-domain opset every node is chosen for.
        input_name, input_dims: the graph input; names in ``input_dims`` are dynamic axes.
        outputs: the name and dims of each graph output, in ``result.outputs``' order.
        step: called with each stage's path before its nodes are written.

    Raises:
        RunError: a stage has no emitter, or a module in it none (a bug, not a bad spec).
    """
    graph = Graph(opset)
    x = graph.claim(input_name)
    for stage in result.stages:
        step(stage.path)
        emitter = EMITTERS.get(stage.kind)
        if emitter is None:
            raise RunError(f"no ONNX emitter is registered for {stage.kind!r} ({stage.path})")
        modules = StageModules(network, network.stage_modules[stage.path])
        try:
            x = emitter(stage, modules, graph, x)
        except RunError:
            raise
        except Exception as error:  # a bug in an emitter; never KeyboardInterrupt (not an Exception)
            raise RunError(f"writing the ONNX nodes of {stage.path} ({stage.kind}) failed: "
                           f"{first_line(error)}") from error
        if modules.names:
            graph.values[modules.names[-1]] = x
    taps = [tap.module for tap in network.outputs] or [network.output_name]
    return graph.model(input_name=input_name, input_dims=input_dims,
                       outputs=[(graph.values[tap], name, dims) for tap, (name, dims) in zip(taps, outputs)])
