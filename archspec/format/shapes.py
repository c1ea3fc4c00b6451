"""The static pass: the one walk over a spec. Each stage carries its part, its number among
parts of its kind, and its input and output shapes and parameters; everything after it
(builder, memory model, diagram, exporter, docs) iterates stages. Never imports torch.

The builder must agree with this pass exactly (a test checks every spec and random ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from archspec.format.parts import StagePart
from archspec.format.parts.base import Shape
from archspec.format.schema import Spec

__all__ = ["Shape", "Stage", "StaticPass", "input_shape", "static_pass"]


@dataclass(frozen=True)
class Stage:
    """One part of the network after the static pass."""

    path: str
    """Where the part is in the spec: ``stem``, ``body[3]``, ``head``."""
    part: StagePart
    """The part, with everything it inherits from ``defaults`` resolved."""
    number: int
    """1-based position among the parts of the same kind (``denseblock2``, ``transition1``)."""
    in_shape: Shape
    """Input shape of one sample."""
    out_shape: Shape
    """Output shape of one sample."""
    params: int
    """Trainable parameters of the part."""

    @property
    def kind(self) -> str:
        """The part's type tag."""
        return self.part.type


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
        """Width of the features the head reads."""
        return self.stages[-1].in_shape[0]

    @property
    def dense_blocks(self) -> int:
        """How many dense blocks the body holds."""
        return sum(1 for stage in self.stages if stage.part.dense)


def static_pass(spec: Spec) -> StaticPass:
    """Output shape and parameters of every part of ``spec``.

    Raises:
        SpecError: a part's spatial size falls below 1×1, or a transition keeps no channels.
    """
    shape = spec.input.sample_shape()
    located = [("stem", spec.stem), *((f"body[{i}]", part) for i, part in enumerate(spec.body)), ("head", spec.head)]
    numbers: dict[str, int] = {}
    stages = []
    for path, written in located:
        part = written.resolved(spec.defaults)
        numbers[part.type] = numbers.get(part.type, 0) + 1
        out_shape, params = part.infer(shape, path)
        stages.append(Stage(path, part, numbers[part.type], shape, out_shape, params))
        shape = out_shape
    return StaticPass(spec.input.sample_shape(), tuple(stages))


def input_shape(spec: Spec) -> Shape:
    """Shape of one input sample that ``spec`` declares."""
    return spec.input.sample_shape()
