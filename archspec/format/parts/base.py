"""What every kind of part answers, and the arithmetic the homes share.

A kind of part is one pydantic class in its own module under ``parts/``: its
fields (the schema), and the facets every later layer asks of it through the
static pass's stages — its shape and parameter rule, its training-memory rule,
its diagram style. Its section of the spec reference is generated from its
docstrings. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archspec.errors import Problem, SpecError
from archspec.format.parts.vocabulary import INHERIT

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

# Shape of one sample: (channels, height, width) for images, (features,) for tables.
Shape = tuple[int, ...]

INDEX_VALUES = 2  # an int64 max-pool index takes the room of two float32 values

_AT = re.compile(r"^(stem|head|body\[(\d{1,3})\])(?:\.([a-z_]{1,32}))?$")
At = Annotated[str, Field(min_length=1, max_length=64, pattern=_AT.pattern)]
"""A point of the network: a part's path (after the whole part) or ``path.point`` inside it."""


def split_at(at: str) -> tuple[str, str]:
    """``body[1].activation`` → (``body[1]``, ``activation``); a bare path's point is ``output``."""
    match = _AT.match(at)
    return match.group(1), match.group(3) or "output"


class Part(BaseModel):
    """Base of every spec part: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
        strict=True,  # YAML and JSON values are already typed: "6" is not a count
    )


@dataclass(frozen=True)
class Box:
    """How the diagram draws one part."""

    title: str
    detail: str
    colour: str
    sketch_layers: int = 0
    """Dense layers to sketch inside the box (0: none)."""


class InputPart(Part):
    """Facets of an input: the shape of one sample and the layer kind it needs downstream."""

    FACETS: ClassVar[tuple[str, ...]] = ("sample_shape",)
    """Methods every kind in this role defines itself (the facet test checks them)."""
    layer: ClassVar[str]
    """Layer kind (``conv`` or ``linear``) every body part after the stem must use."""

    def sample_shape(self) -> Shape:
        """Shape of one input sample."""
        raise NotImplementedError


class StagePart(Part):
    """Facets of a stem, body part or head: the static pass, the memory model and the diagram.

    This class and ``HeadPart`` are the whole protocol: code outside a part's home reads a
    part only through what is declared here (``tests/test_conformance.py`` runs every kind).
    """

    FACETS: ClassVar[tuple[str, ...]] = ("infer", "stored_activations", "box", "depth_widths")
    inputs: ClassVar[frozenset[str]]
    """Input tags this part can follow."""
    dense: ClassVar[bool] = False
    """Whether this is a dense block (a body needs at least one)."""
    numbering: ClassVar[str | None] = None
    """Parts that share ``Stage.number`` (``denseblock2``, ``transition1``); ``None``: the tag."""
    points: ClassVar[dict[str, str]] = {}
    """Points inside the part an output can be taken at, besides ``output`` (after the whole
    part), each with what it is. Tapped as ``at: stem.activation``."""
    feature_point: ClassVar[str | None] = None
    """The point timm's ``features_only`` takes from this part (``None``: none)."""
    own_input_gradient: ClassVar[bool] = True
    """Whether the gradient this part's backward hands its input is a tensor of its own (a norm,
    convolution, pool or Linear first), so the part before may accumulate into it in place;
    ``False`` for a concatenation, whose input gradient is a view of its output's."""

    def reads(self) -> tuple[str, ...]:
        """Earlier outputs the part reads besides its input (a skip: ``body[4]``,
        ``body[1].activation``), written as a spec's ``outputs`` write ``at``."""
        return ()

    def layer_kind(self) -> str | None:
        """Layer kind (``conv`` or ``linear``) the part is made of; ``None``: it fits either input."""
        return None

    def resolved(self, defaults: BaseModel) -> StagePart:
        """This part with every field that says ``inherit`` taken from ``defaults``."""
        inherited = {name: getattr(defaults, name) for name, value in self if value == INHERIT}
        return self.model_copy(update=inherited) if inherited else self

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        """Output shape of one sample and trainable parameters; ``skips``: the shapes of what
        ``reads()`` names, in that order.

        Raises:
            SpecError: the part cannot take ``in_shape`` (its problem's path is ``path``).
        """
        raise NotImplementedError

    def point_shape(self, point: str, stage: Stage) -> Shape:
        """Shape of one sample at ``point`` (``output`` or one of ``points``)."""
        if point == "output":
            return stage.out_shape
        raise NotImplementedError(f"{self.type} declares point {point!r} but has no shape for it")

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        """Values per sample this part saves for backward, and those its backward holds on top.

        ``memory_efficient``: count a dense block in that mode (``None``: its own setting).
        """
        raise NotImplementedError

    def box(self, stage: Stage) -> Box:
        """The diagram's box for this part."""
        raise NotImplementedError

    def depth_widths(self, stage: Stage) -> list[int]:
        """Channels after each step of depth this part adds to the diagram's channel plot."""
        raise NotImplementedError


class HeadPart(StagePart):
    """What the rest of archspec reads from a head, besides the stage facets."""

    numbering = "norm"  # its norm follows a body's ``norm`` parts: ``features.norm5`` when there are none

    output_name: ClassVar[str]
    """Name of the network's output in an exported file (``logits``, ``prediction``)."""
    loss: ClassVar[str]
    """Loss a training step uses with this head: ``cross_entropy``, ``mse``."""
    class_scores: ClassVar[bool]
    """Whether the outputs are class scores: top-1 agreement is checked and ``preprocess.labels`` names them."""
    pools: ClassVar[bool]
    """Whether the head pools feature maps to one vector (a timm classifier: ``forward_head``,
    ``reset_classifier``); ``False``: it keeps every position."""

    @property
    def outputs(self) -> int:
        """Class scores or targets the head produces per sample (or per position); a head whose
        output is its input's features has no such count and is never asked."""
        raise NotImplementedError(f"a {self.type} head outputs its input's features")


# ---- arithmetic shared by the homes -------------------------------------------------


def linear_params(fan_in: int, fan_out: int, bias: bool, kernel: int = 1, dims: int = 0) -> int:
    """Parameters of a Linear map (``dims`` 0) or a ``kernel``-wide convolution over ``dims`` axes."""
    return fan_in * fan_out * kernel**dims + (fan_out if bias else 0)


def window(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def spatial_dims(shape: Shape) -> int:
    """Spatial dimensions of a sample: 0 for feature vectors, 1, 2 or 3 for signals, images, volumes."""
    return len(shape) - 1


def positions(shape: Shape) -> int:
    """Positions per channel: ``H × W`` for images, 1 for feature vectors."""
    count = 1
    for size in shape[1:]:
        count *= size
    return count


def values(shape: Shape) -> int:
    """Values of one sample of ``shape``."""
    return shape[0] * positions(shape)


def spatial(path: str, before: Shape, after: Shape) -> Shape:
    """``after``, or the problem at ``path`` if a spatial size fell below 1."""
    if any(size < 1 for size in after[1:]):
        raise SpecError(
            Problem(
                f"spatial size falls below 1×1 here ({'×'.join(map(str, before[1:]))} in, "
                f"{'×'.join(map(str, after[1:]))} out); use a larger input or fewer downsampling parts",
                path=path,
            )
        )
    return after
