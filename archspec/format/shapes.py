"""Static pass: each part's output shape and parameter count, computed without torch.

The builder must agree with this pass exactly (a test checks every spec), so the
formulas here mirror the layers in ``blocks.py`` one for one.
"""

from __future__ import annotations

from dataclasses import dataclass

from archspec.errors import Problem, SpecError
from archspec.format.schema import (
    ClassifierHead,
    ConvStem,
    DenseBlock,
    ImageInput,
    MLPStem,
    Spec,
    Transition,
)

# Shape of one sample: (channels, height, width) for images, (features,) for tables.
Shape = tuple[int, ...]

_DENSE_KERNEL = 3  # every conv dense layer ends in a 3×3, padding 1 convolution
_POOL = 2  # transitions pool 2×2 with stride 2


@dataclass(frozen=True)
class Stage:
    """One part of the network after the static pass."""

    path: str
    """Where the part is in the spec: ``stem``, ``body[3]``, ``head``."""
    kind: str
    """The part's type tag."""
    out_shape: Shape
    """Output shape of one sample."""
    params: int
    """Trainable parameters of the part."""


@dataclass(frozen=True)
class StaticPass:
    """All stages of a spec, from stem to head."""

    input_shape: Shape
    stages: tuple[Stage, ...]

    @property
    def params(self) -> int:
        """Trainable parameters of the whole network."""
        return sum(stage.params for stage in self.stages)

    @property
    def out_shape(self) -> Shape:
        """Output shape of one sample."""
        return self.stages[-1].out_shape

    @property
    def num_features(self) -> int:
        """Width of the features the head's final linear layer reads."""
        return self.stages[-2].out_shape[0]


def _norm(width: int, norm: str) -> int:
    return 2 * width if norm == "batch_norm" else 0  # BatchNorm: weight and bias


def _linear(fan_in: int, fan_out: int, bias: bool, kernel: int = 1) -> int:
    """Parameters of a Linear map or a square ``kernel``×``kernel`` convolution."""
    return fan_in * fan_out * kernel * kernel + (fan_out if bias else 0)


def _window(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _spatial(path: str, before: Shape, height: int, width: int) -> Shape:
    if height < 1 or width < 1:
        raise SpecError(
            Problem(
                f"spatial size falls below 1×1 here ({before[1]}×{before[2]} in, "
                f"{height}×{width} out); use a larger input or fewer downsampling parts",
                path=path,
            )
        )
    return (before[0], height, width)


def _conv_stem(stem: ConvStem, shape: Shape) -> tuple[Shape, int]:
    channels, height, width = shape
    params = _linear(channels, stem.out_channels, stem.bias, stem.kernel_size)
    params += _norm(stem.out_channels, stem.norm)
    out = _spatial(
        "stem",
        shape,
        _window(height, stem.kernel_size, stem.stride, stem.padding),
        _window(width, stem.kernel_size, stem.stride, stem.padding),
    )
    out = (stem.out_channels, out[1], out[2])
    if stem.pool == "max":
        window = (stem.pool_kernel_size, stem.pool_stride, stem.pool_padding)
        out = _spatial("stem", out, _window(out[1], *window), _window(out[2], *window))
    return out, params


def _mlp_stem(stem: MLPStem, shape: Shape) -> tuple[Shape, int]:
    widths = [shape[0], *stem.hidden]
    params = sum(_linear(a, b, stem.bias) for a, b in zip(widths, widths[1:]))
    return (widths[-1],), params


def dense_layer_params(block: DenseBlock, in_width: int) -> int:
    """Parameters of one dense layer reading ``in_width`` channels (or features)."""
    kernel = _DENSE_KERNEL if block.layer == "conv" else 1
    growth = block.growth_rate
    params = _norm(in_width, "batch_norm")
    if block.bn_size is None:
        return params + _linear(in_width, growth, block.bias, kernel)
    bottleneck = block.bn_size * growth
    params += _linear(in_width, bottleneck, block.bias)  # 1×1 conv or linear
    params += _norm(bottleneck, "batch_norm")
    return params + _linear(bottleneck, growth, block.bias, kernel)


def _dense_block(block: DenseBlock, shape: Shape) -> tuple[Shape, int]:
    in_width = shape[0]
    params = sum(
        dense_layer_params(block, in_width + index * block.growth_rate)
        for index in range(block.num_layers)
    )
    return (in_width + block.num_layers * block.growth_rate, *shape[1:]), params


def _transition(path: str, part: Transition, shape: Shape) -> tuple[Shape, int]:
    out_width = part.out_width(shape[0])
    if out_width < 1:
        raise SpecError(
            Problem(
                f"compression {part.compression} of {shape[0]} channels leaves none",
                path=path,
            )
        )
    params = _norm(shape[0], part.norm) + _linear(shape[0], out_width, part.bias)
    out: Shape = (out_width, *shape[1:])
    if part.pool != "none":
        out = _spatial(path, out, out[1] // _POOL, out[2] // _POOL)
    return out, params


def _head(spec: Spec, shape: Shape) -> tuple[Shape, int]:
    head = spec.head
    outputs = head.num_classes if isinstance(head, ClassifierHead) else head.out_features
    return (outputs,), _norm(shape[0], head.norm) + _linear(shape[0], outputs, True)


def input_shape(spec: Spec) -> Shape:
    """Shape of one input sample that ``spec`` declares."""
    if isinstance(spec.input, ImageInput):
        return (spec.input.channels, spec.input.height, spec.input.width)
    return (spec.input.features,)


def static_pass(spec: Spec) -> StaticPass:
    """Output shape and parameters of every part of ``spec``.

    Raises:
        SpecError: a part's spatial size falls below 1×1, or a transition keeps no channels.
    """
    shape = input_shape(spec)
    if isinstance(spec.stem, ConvStem):
        shape, params = _conv_stem(spec.stem, shape)
    else:
        shape, params = _mlp_stem(spec.stem, shape)
    stages = [Stage("stem", spec.stem.type, shape, params)]
    for index, part in enumerate(spec.body):
        path = f"body[{index}]"
        if isinstance(part, DenseBlock):
            shape, params = _dense_block(part, shape)
        else:
            shape, params = _transition(path, part, shape)
        stages.append(Stage(path, part.type, shape, params))
    shape, params = _head(spec, shape)
    stages.append(Stage("head", spec.head.type, shape, params))
    return StaticPass(input_shape(spec), tuple(stages))
