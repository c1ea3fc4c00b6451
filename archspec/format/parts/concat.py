"""A skip connection: the map an earlier point gave, concatenated after the input's channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from archspec.errors import Problem, SpecError
from archspec.format.parts.base import At, Box, Shape, StagePart

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

Fit = Literal["none", "crop", "pad"]


class Concat(StagePart):
    """``cat([input, skip])`` along channels (FC-DenseNet's and U-Net's order). Where the
    spatial sizes differ, ``fit`` says what happens to the input: ``crop`` takes its centre
    (a larger input: FC-DenseNet's transposed convolution), ``pad`` zero-pads it evenly with
    the odd row last (a smaller input); ``none`` refuses the spec."""

    inputs = frozenset({"signal", "image", "volume"})
    own_input_gradient = False
    type: Literal["concat"]
    """Tag: a skip concatenation."""
    skip: At
    """The earlier map it reads: a part (``body[4]``, its output) or a point (``body[1].activation``)."""
    fit: Fit = "none"
    """What to do with the input when its spatial size differs from the skip's."""

    def reads(self) -> tuple[str, ...]:
        return (self.skip,)

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        (skip,) = skips
        if len(skip) != len(in_shape):
            raise SpecError(Problem(f"the skip {self.skip} has {len(skip) - 1} spatial axes, the input "
                                    f"{len(in_shape) - 1}", path=f"{path}.skip"))
        ins, wanted = in_shape[1:], skip[1:]
        needed = {"crop": all(a >= b for a, b in zip(ins, wanted)), "pad": all(a <= b for a, b in zip(ins, wanted)),
                  "none": ins == wanted}
        if not needed[self.fit]:
            advice = {"none": "set fit: crop or fit: pad", "crop": "the input is smaller: use fit: pad",
                      "pad": "the input is larger: use fit: crop"}[self.fit]
            raise SpecError(Problem(f"the input is {'×'.join(map(str, ins))} and the skip {self.skip} "
                                    f"{'×'.join(map(str, wanted))}; {advice}", path=f"{path}.fit"))
        return (in_shape[0] + skip[0], *wanted), 0

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        return 0, 0  # concatenation, cropping and padding need only sizes for backward

    def box(self, stage: Stage) -> Box:
        return Box("concat", f"+ {self.skip}", "#fbe5d6")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
