"""The spec: input, stem, defaults, body and head, and the rules between them.

Each part's own fields and rules live in its home under ``parts/``. Channel counts
never appear here: they follow from the input and the parts (see ``shapes.py``).
This module never imports torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from archspec.format.outputs import MAX_OUTPUTS, Tap, split_at
from archspec.format.parts import ROLES, BodyPart, Defaults, Head, Input, Part, Stem, tag
from archspec.format.preprocess import Preprocess

MAX_BODY_PARTS = 256
"""Parts one body may hold: bounds every walk over the body before it runs."""


class PartError(ValueError):
    """A rule between parts, broken at ``path`` (e.g. ``body[2].layer``)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class Spec(Part):
    """A whole network: input, stem, a body of dense blocks and transitions, head."""

    archspec: Literal[1]
    """Format version of this file; lets later versions migrate old files."""
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
    """Name of the network (letters, digits, ``_``, ``.``, ``-``)."""
    description: str = ""
    """Free text: what this network is and where its numbers come from."""
    input: Input
    """What the network takes."""
    stem: Stem
    """The layers before the first dense block."""
    defaults: Defaults = Defaults()
    """Values every dense block takes unless it sets its own."""
    body: Annotated[list[BodyPart], Field(min_length=1, max_length=MAX_BODY_PARTS)]
    """Dense blocks and transitions, in order."""
    head: Head
    """The layers after the last dense block."""
    outputs: Annotated[list[Tap], Field(min_length=1, max_length=MAX_OUTPUTS)] | None = None
    """Named outputs taken at points of the network (a backbone's maps); the network then returns
    them as a mapping, in this order. ``null``: the head's output alone."""
    preprocess: Preprocess | None = None
    """What a served network expects before its input (normalisation, labels, image sizes);
    written into exported files."""

    @model_validator(mode="after")
    def _parts_fit_together(self) -> Spec:
        kind = self.input.type
        for role, part, noun in (("stem", self.stem, ""), ("head", self.head, " head")):
            if kind not in part.inputs:
                fitting = " or ".join(tag(other) for other in ROLES[role] if kind in other.inputs)
                raise PartError(f"{role}.type", f"{kind} input needs a {fitting}{noun}, got {part.type}")
        for index, part in enumerate(self.body):
            if part.layer_kind() not in (None, self.input.layer):
                raise PartError(
                    f"body[{index}].layer", f"{kind} input needs {self.input.layer} layers, got {part.layer_kind()}"
                )
        if not any(part.dense for part in self.body):
            raise PartError("body", "needs at least one dense_block")
        self._reads_exist()
        if self.outputs is not None:
            self._outputs_exist()
        if self.preprocess is not None:
            self._preprocess_fits()
        return self

    def _outputs_exist(self) -> None:
        names: set[str] = set()
        for index, tap in enumerate(self.outputs):
            if tap.name in names:
                raise PartError(f"outputs[{index}].name", f"{tap.name!r} names two outputs")
            names.add(tap.name)
            self._point_exists(f"outputs[{index}].at", tap.at, len(self.body) + 2)

    def _reads_exist(self) -> None:
        for index, part in enumerate(self.body):
            for at in part.reads():
                self._point_exists(f"body[{index}]", at, index + 1)

    def _point_exists(self, where: str, at: str, before: int) -> None:
        """Refuse ``at`` unless it names a point of one of the first ``before`` parts (stem first)."""
        located = {"stem": self.stem, **{f"body[{i}]": part for i, part in enumerate(self.body)}, "head": self.head}
        path, point = split_at(at)
        order = list(located)
        if path not in located:
            raise PartError(where, f"{path} is not a part (the body has {len(self.body)})")
        if order.index(path) >= before:
            raise PartError(where, f"{at} comes after the part that reads it")
        part = located[path]
        if point != "output" and point not in part.points:
            known = ", ".join(f"{path}.{name}" for name in part.points) or "none inside it"
            raise PartError(where, f"a {part.type} has no point {point!r} (points: {path}, {known})")

    def _preprocess_fits(self) -> None:
        preprocess, channels = self.preprocess, self.input.sample_shape()[0]
        for name in ("mean", "std"):
            values = getattr(preprocess, name)
            if values is not None and len(values) != channels:
                raise PartError(f"preprocess.{name}", f"has {len(values)} values for {channels} input channels")
        if preprocess.labels is not None and not self.head.class_scores and not self.head.pools:
            raise PartError("preprocess.labels", f"name outputs, and a {self.head.type} head's output is a feature map")
        if preprocess.labels is not None and len(preprocess.labels) != self.head.outputs:
            raise PartError("preprocess.labels",
                            f"has {len(preprocess.labels)} labels for {self.head.outputs} outputs")
        if (preprocess.resize or preprocess.crop) and len(self.input.sample_shape()) != 3:
            raise PartError("preprocess", f"resize and crop apply to 2D images, not {self.input.type} input")
