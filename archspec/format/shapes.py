"""The static pass: the one walk over a spec. Each stage carries its part, its role, its number
among parts of its kind, its input and output shapes and parameters, and how many readers its
output has; the pass also gives every named output's shape. Everything after it (builder,
memory model, diagram, exporter, docs) iterates stages. Never imports torch.

The builder must agree with this pass exactly (a test checks every spec and random ones).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archspec.errors import Problem, SpecError
from archspec.format.outputs import split_at
from archspec.format.parts import HeadPart, StagePart
from archspec.format.parts.base import Shape
from archspec.format.schema import Spec

__all__ = ["OutputShape", "Shape", "Stage", "StaticPass", "input_shape", "static_pass"]


@dataclass(frozen=True)
class Stage:
    """One part of the network after the static pass."""

    path: str
    """Where the part is in the spec: ``stem``, ``body[3]``, ``head``."""
    role: str
    """``stem``, ``body`` or ``head``."""
    part: StagePart
    """The part, with everything it inherits from ``defaults`` resolved."""
    number: int
    """1-based position among the parts of the same numbering (``denseblock2``, ``transition1``)."""
    in_shape: Shape
    """Input shape of one sample."""
    out_shape: Shape
    """Output shape of one sample."""
    params: int
    """Trainable parameters of the part."""
    readers: int
    """How many consumers read the part's output: the next part, each part that reads it as a
    skip, and each output taken there."""
    reads: tuple[tuple[str, str], ...] = ()
    """(path, point) of each earlier map the part reads besides its input (its skips)."""
    skips: tuple[Shape, ...] = ()
    """The shape of each map in ``reads``."""
    tapped: frozenset[str] = frozenset()
    """Points inside the part (not ``output``) that later parts read or the spec's outputs take."""
    exclusive_gradient: bool = False
    """Whether the gradient of the part's output reaches it as a tensor nothing else holds: one
    reader, which declares ``own_input_gradient`` (a dense block then accumulates in place)."""

    @property
    def kind(self) -> str:
        """The part's type tag."""
        return self.part.type


@dataclass(frozen=True)
class OutputShape:
    """One output of the network: its name, where it is taken, its shape and stride."""

    name: str
    path: str
    """The stage it is taken from."""
    point: str
    """``output`` (after the whole part) or a point the part declares."""
    shape: Shape
    reduction: int
    """Input size over output size along the first spatial axis (timm's ``reduction``); 1 for vectors."""


@dataclass(frozen=True)
class StaticPass:
    """All stages of a spec, from stem to head, and the network's outputs."""

    input_shape: Shape
    stages: tuple[Stage, ...]
    outputs: tuple[OutputShape, ...]
    """What the network returns: the head's output alone, or the spec's named ``outputs``."""
    named: bool
    """Whether the spec names its outputs (the network then returns a mapping)."""

    @property
    def params(self) -> int:
        """Trainable parameters of the whole network."""
        return sum(stage.params for stage in self.stages)

    @property
    def head(self) -> Stage:
        """The head's stage."""
        return next(stage for stage in self.stages if stage.role == "head")

    @property
    def out_shape(self) -> Shape:
        """Output shape of one sample of the head."""
        return self.head.out_shape

    @property
    def num_features(self) -> int:
        """Width of the features the head reads."""
        return self.head.in_shape[0]

    @property
    def dense_blocks(self) -> int:
        """How many dense blocks the body holds."""
        return sum(1 for stage in self.stages if stage.part.dense)

    def stage(self, path: str) -> Stage:
        """The stage at ``path`` (``stem``, ``body[2]``, ``head``)."""
        return next(stage for stage in self.stages if stage.path == path)

    def output_at(self, name: str, path: str, point: str) -> OutputShape:
        """The output ``name`` taken at ``point`` of the stage at ``path``."""
        shape = _point_shape(list(self.stages), path, point)
        reduction = self.input_shape[1] // shape[1] if len(shape) > 1 else 1
        return OutputShape(name, path, point, shape, reduction)

    def feature_maps(self) -> tuple[OutputShape, ...]:
        """timm's ``features_only`` maps: each part's ``feature_point``, the deepest one per stride.

        Raises:
            SpecError: the network has no feature maps (tabular input).
        """
        if len(self.input_shape) < 2:
            raise SpecError(Problem("features_only needs feature maps; tabular input has none", path="input"))
        candidates = [self.output_at(_at(stage.path, stage.part.feature_point), stage.path, stage.part.feature_point)
                      for stage in self.stages if stage.part.feature_point is not None]
        return tuple(
            candidate for candidate, deeper in zip(candidates, [*candidates[1:], None])
            if deeper is None or deeper.shape[1:] != candidate.shape[1:]
        )


def _point_shape(stages: list[Stage], path: str, point: str) -> Shape:
    stage = next(stage for stage in stages if stage.path == path)
    return stage.part.point_shape(point, stage)


def _at(path: str, point: str) -> str:
    """How a spec's ``at`` writes a point: ``body[2]`` for a part's output, ``stem.activation`` inside."""
    return path if point == "output" else f"{path}.{point}"


def static_pass(spec: Spec) -> StaticPass:
    """Output shape and parameters of every part of ``spec``, and of every output.

    Raises:
        SpecError: a part's spatial size falls below 1×1, a transition keeps no channels, or
            per-position class scores do not come back to the input's size (with sizes that do).
    """
    result = _walk(spec)
    head = result.head
    if head.part.class_scores and not head.part.pools and head.out_shape[1:] != result.input_shape[1:]:
        raise SpecError(Problem(
            f"the {head.kind} head's scores are {_size(head.out_shape)} for a {_size(result.input_shape)} input: "
            f"the pooling and upsampling do not come back to its size{_sizes_that_do(spec)}", path="input"))
    return result


_MAX_STRIDE_POWER = 6  # sizes suggested are multiples of 2, 4, … 64: a DenseNet halves at most six times


def _size(shape: Shape) -> str:
    return "×".join(map(str, shape[1:]))


def _sizes_that_do(spec: Spec) -> str:
    """``; use 64×96 or 96×128``: the nearest multiples of the smallest power of two that work, if any."""
    sizes = spec.input.sample_shape()[1:]
    names = [name for name in ("length", "depth", "height", "width") if name in type(spec.input).model_fields]
    for power in range(1, _MAX_STRIDE_POWER + 1):
        step = 2**power
        working = []
        down = tuple(max(step, size - size % step) for size in sizes)
        up = tuple(size + (-size) % step for size in sizes)
        for candidate in (down, up):
            try:
                tried = _walk(spec.model_copy(update={"input": spec.input.model_copy(
                    update=dict(zip(names, candidate)))}))
            except SpecError:
                continue
            if tried.head.out_shape[1:] == candidate:
                working.append("×".join(map(str, candidate)))
        if working:
            return f"; use {' or '.join(dict.fromkeys(working))}"
    return ""


def _walk(spec: Spec) -> StaticPass:
    shape = spec.input.sample_shape()
    located = [("stem", "stem", spec.stem), *(("body", f"body[{i}]", part) for i, part in enumerate(spec.body)),
               ("head", "head", spec.head)]
    taps = [(tap.path, tap.point) for tap in spec.outputs or ()]
    taps += [split_at(at) for part in spec.body for at in part.reads()]
    numbers: dict[str, int] = {}
    stages: list[Stage] = []
    for index, (role, path, written) in enumerate(located):
        part = written.resolved(spec.defaults)
        numbering = part.numbering or part.type
        numbers[numbering] = numbers.get(numbering, 0) + 1
        reads = tuple(split_at(at) for at in part.reads())
        skips = tuple(_point_shape(stages, *read) for read in reads)
        out_shape, params = part.infer(shape, path, skips)
        readers = (index + 1 < len(located)) + taps.count((path, "output"))  # the next part, skips, outputs
        tapped = frozenset(point for taken, point in taps if taken == path and point != "output")
        stages.append(Stage(path, role, part, numbers[numbering], shape, out_shape, params, readers, reads, skips,
                            tapped))
        if len(stages) > 1 and stages[-2].readers == 1 and part.own_input_gradient:
            stages[-2] = dataclasses.replace(stages[-2], exclusive_gradient=True)
        shape = out_shape
    result = StaticPass(spec.input.sample_shape(), tuple(stages), (), named=spec.outputs is not None)
    head: HeadPart = result.head.part
    wanted = [(tap.name, tap.path, tap.point) for tap in spec.outputs or ()] or [(head.output_name, "head", "output")]
    outputs = tuple(result.output_at(*output) for output in wanted)
    return StaticPass(result.input_shape, result.stages, outputs, result.named)


def input_shape(spec: Spec) -> Shape:
    """Shape of one input sample that ``spec`` declares."""
    return spec.input.sample_shape()
