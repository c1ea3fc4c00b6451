"""Transition up: doubles the resolution on a segmentation network's way back up, by a
transposed convolution (FC-DenseNet) or by nearest or linear upsampling (U-Net decoders)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from archspec.format.parts.base import Box, Shape, StagePart, linear_params, spatial, spatial_dims, values

if TYPE_CHECKING:
    from archspec.format.shapes import Stage

UpsampleMode = Literal["transposed", "nearest", "linear"]


class TransitionUp(StagePart):
    """Upsampling by ``scale`` along every spatial axis: a ``kernel_size`` transposed convolution
    (FC-DenseNet's 3×3 with stride 2 and no padding, whose one extra row and column the next
    ``concat`` crops), or nearest or (bi/tri)linear interpolation, which keeps the channels."""

    inputs = frozenset({"signal", "image", "volume"})
    type: Literal["transition_up"]
    """Tag: a transition up."""
    mode: UpsampleMode = "transposed"
    """``transposed`` (a learned transposed convolution), ``nearest`` or ``linear``
    (``align_corners: false``, torch's and ONNX's ``half_pixel``)."""
    scale: Annotated[int, Field(ge=2, le=8)] = 2
    """Upsampling factor along every spatial axis (the transposed convolution's stride)."""
    out_channels: PositiveInt | None = None
    """Channels of a transposed convolution; ``null``: as many as it reads."""
    kernel_size: PositiveInt = 3
    """Kernel of a transposed convolution."""
    padding: Annotated[int, Field(ge=0)] = 0
    """Padding of a transposed convolution (output: ``(n - 1) × scale + kernel_size - 2 × padding``)."""
    bias: bool = True
    """Whether a transposed convolution has a bias (FC-DenseNet's has)."""

    @model_validator(mode="after")
    def _convolution_fields_need_a_convolution(self) -> TransitionUp:
        if self.mode != "transposed" and self.out_channels is not None:
            raise ValueError(f"{self.mode} upsampling keeps the channels: out_channels needs mode: transposed")
        if self.mode == "transposed" and 2 * self.padding >= self.kernel_size:
            raise ValueError(f"padding {self.padding} leaves nothing of a {self.kernel_size}-wide kernel")
        return self

    def layer_kind(self) -> str | None:
        return "conv"

    def infer(self, in_shape: Shape, path: str, skips: tuple[Shape, ...] = ()) -> tuple[Shape, int]:
        if self.mode != "transposed":
            return (in_shape[0], *(size * self.scale for size in in_shape[1:])), 0
        width = self.out_channels or in_shape[0]
        sizes = tuple((size - 1) * self.scale + self.kernel_size - 2 * self.padding for size in in_shape[1:])
        params = linear_params(in_shape[0], width, self.bias, self.kernel_size, spatial_dims(in_shape))
        return spatial(path, in_shape, (width, *sizes)), params

    def stored_activations(self, stage: Stage, memory_efficient: bool | None) -> tuple[int, int]:
        # A transposed convolution saves its input, which is the part before's output and is
        # counted there (a dense block's, or the shared buffer it is a view of); interpolation's
        # backward needs only sizes.
        return 0, 0

    def box(self, stage: Stage) -> Box:
        what = f"conv⁻¹ {self.kernel_size}/{self.scale}" if self.mode == "transposed" else f"{self.mode} ×{self.scale}"
        return Box("up", what, "#dce9f5")

    def depth_widths(self, stage: Stage) -> list[int]:
        return [stage.out_shape[0]]
