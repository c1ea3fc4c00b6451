"""Pydantic models of the spec format: one tagged class per part.

Channel counts never appear here: they follow from the input, the stem,
``growth_rate × num_layers`` and compression (see ``shapes.py``). This module
never imports torch.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

FORMAT_VERSION = 1

Norm = Literal["batch_norm", "none"]
Activation = Literal["relu", "none"]
LayerKind = Literal["conv", "linear"]


class PartError(ValueError):
    """A rule between parts, broken at ``path`` (e.g. ``body[2].layer``)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class Part(BaseModel):
    """Base of every spec part: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
        strict=True,  # YAML and JSON values are already typed: "6" is not a count
    )


class ImageInput(Part):
    """An image batch ``(N, channels, height, width)``."""

    type: Literal["image"]
    """Tag: an image input."""
    channels: PositiveInt
    """Channels of the input image (1 for Fashion-MNIST, 3 for RGB)."""
    height: PositiveInt
    """Height of the input image in pixels."""
    width: PositiveInt
    """Width of the input image in pixels."""


class TabularInput(Part):
    """A batch of feature vectors ``(N, features)``."""

    type: Literal["tabular"]
    """Tag: a tabular input."""
    features: PositiveInt
    """Number of input features per row."""


class ConvStem(Part):
    """Convolution, optional norm and activation, optional max pool (torchvision's ``conv0``…``pool0``)."""

    type: Literal["conv_stem"]
    """Tag: a convolutional stem."""
    out_channels: PositiveInt = 64
    """Channels produced by the stem convolution (torchvision's ``num_init_features``)."""
    kernel_size: PositiveInt = 7
    """Kernel size of the stem convolution."""
    stride: PositiveInt = 2
    """Stride of the stem convolution."""
    padding: Annotated[int, Field(ge=0)] = 3
    """Zero padding of the stem convolution."""
    bias: bool = False
    """Whether the stem convolution has a bias."""
    norm: Norm = "batch_norm"
    """Normalisation after the stem convolution."""
    activation: Activation = "relu"
    """Activation after the normalisation."""
    pool: Literal["max", "none"] = "max"
    """Pooling at the end of the stem."""
    pool_kernel_size: PositiveInt = 3
    """Kernel size of the stem max pool."""
    pool_stride: PositiveInt = 2
    """Stride of the stem max pool."""
    pool_padding: Annotated[int, Field(ge=0)] = 1
    """Padding of the stem max pool."""

    @model_validator(mode="after")
    def _padding_fits_kernels(self) -> ConvStem:
        # PyTorch refuses padding greater than half the kernel for pooling.
        if self.pool == "max" and self.pool_padding > self.pool_kernel_size // 2:
            raise ValueError(
                f"pool_padding must be at most half of pool_kernel_size "
                f"({self.pool_kernel_size // 2}), got {self.pool_padding}"
            )
        return self


class MLPStem(Part):
    """A stack of Linear-activation layers for tabular input."""

    type: Literal["mlp_stem"]
    """Tag: a multi-layer perceptron stem."""
    hidden: Annotated[list[PositiveInt], Field(min_length=1)]
    """Widths of the hidden layers, in order (seed 001: ``[512, 1024]``)."""
    activation: Activation = "relu"
    """Activation after each linear layer."""
    bias: bool = True
    """Whether the linear layers have a bias."""


class Defaults(Part):
    """Values every dense block takes unless it sets its own."""

    growth_rate: PositiveInt = 32
    """Channels (or features) each dense layer adds."""
    bn_size: PositiveInt | None = 4
    """Bottleneck width as a multiple of ``growth_rate``; ``null`` for no bottleneck."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout probability after each dense layer (training only)."""
    memory_efficient: bool = False
    """Recompute activations in the backward pass instead of storing them."""
    bias: bool = False
    """Whether the dense layers' convolutions or linear maps have a bias."""


INHERITED_FIELDS = tuple(Defaults.model_fields)


class DenseBlock(Part):
    """``num_layers`` pre-activation layers, each fed the concatenation of all earlier outputs.

    Fields left out are taken from the spec's ``defaults``.
    """

    type: Literal["dense_block"]
    """Tag: a dense block."""
    num_layers: PositiveInt
    """Number of dense layers in the block."""
    layer: LayerKind = "conv"
    """``conv`` (BN-ReLU-Conv3×3, image input) or ``linear`` (BN1d-ReLU-Linear, tabular input)."""
    growth_rate: PositiveInt | None = None
    """Channels (or features) each layer adds; defaults to ``defaults.growth_rate``."""
    bn_size: PositiveInt | None = None
    """Bottleneck width as a multiple of ``growth_rate``, ``null`` for none; defaults to ``defaults.bn_size``."""
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    """Dropout probability after each layer; defaults to ``defaults.drop_rate``."""
    memory_efficient: bool | None = None
    """Recompute activations in backward; defaults to ``defaults.memory_efficient``."""
    bias: bool | None = None
    """Whether the layers have a bias; defaults to ``defaults.bias``."""

    def with_defaults(self, defaults: Defaults) -> DenseBlock:
        """This block with every field it leaves out taken from ``defaults``."""
        missing = {
            name: getattr(defaults, name)
            for name in INHERITED_FIELDS
            if name not in self.model_fields_set
        }
        return self.model_copy(update=missing)


class Transition(Part):
    """Norm-activation-projection that compresses the features, then optional pooling."""

    type: Literal["transition"]
    """Tag: a transition."""
    compression: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Fraction of channels kept (output = floor(in × compression)); 0.5 when neither this nor ``out_channels`` is set."""
    out_channels: PositiveInt | None = None
    """Explicit output channels (or features), instead of ``compression``."""
    layer: LayerKind = "conv"
    """``conv`` (1×1 convolution) or ``linear`` projection."""
    pool: Literal["avg", "max", "none"] = "avg"
    """2×2, stride-2 pooling after the projection (``none`` for linear transitions)."""
    bias: bool = False
    """Whether the projection has a bias."""
    norm: Norm = "batch_norm"
    """Normalisation before the projection."""
    activation: Activation = "relu"
    """Activation before the projection."""
    post_activation: Activation = "none"
    """Activation after the projection (seed 001's MLP transitions end in ReLU)."""

    @model_validator(mode="after")
    def _one_width_rule(self) -> Transition:
        if self.compression is not None and self.out_channels is not None:
            raise ValueError("set either compression or out_channels, not both")
        if self.layer == "linear" and self.pool != "none":
            raise ValueError("a linear transition cannot pool: set pool: none")
        return self

    def out_width(self, in_width: int) -> int:
        """Channels (or features) this transition produces from ``in_width``."""
        if self.out_channels is not None:
            return self.out_channels
        return int(in_width * (0.5 if self.compression is None else self.compression))


class ClassifierHead(Part):
    """Norm, activation, global average pool, then a linear map to class logits."""

    type: Literal["classifier"]
    """Tag: a classification head."""
    num_classes: PositiveInt
    """Number of output classes."""
    norm: Norm = "batch_norm"
    """Normalisation after the last dense block (torchvision's ``features.norm5``)."""
    activation: Activation = "relu"
    """Activation before pooling."""


class RegressorHead(Part):
    """Norm, activation, then a linear map to the regression targets."""

    type: Literal["regressor"]
    """Tag: a regression head for tabular input."""
    out_features: PositiveInt = 1
    """Number of predicted values."""
    norm: Norm = "batch_norm"
    """Normalisation after the last dense block."""
    activation: Activation = "relu"
    """Activation before the output layer."""


Input = Annotated[Union[ImageInput, TabularInput], Field(discriminator="type")]
Stem = Annotated[Union[ConvStem, MLPStem], Field(discriminator="type")]
BodyPart = Annotated[Union[DenseBlock, Transition], Field(discriminator="type")]
Head = Annotated[Union[ClassifierHead, RegressorHead], Field(discriminator="type")]

PART_TAGS = frozenset(
    model.model_fields["type"].annotation.__args__[0]
    for model in (ImageInput, TabularInput, ConvStem, MLPStem, DenseBlock, Transition,
                  ClassifierHead, RegressorHead)
)

# Which layer kind each input kind needs, everywhere after the stem.
_LAYER_FOR_INPUT = {"image": "conv", "tabular": "linear"}
_STEM_FOR_INPUT = {"image": "conv_stem", "tabular": "mlp_stem"}
_HEAD_FOR_INPUT = {"image": "classifier", "tabular": "regressor"}


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
    body: Annotated[list[BodyPart], Field(min_length=1)]
    """Dense blocks and transitions, in order."""
    head: Head
    """The layers after the last dense block."""

    @model_validator(mode="after")
    def _parts_fit_together(self) -> Spec:
        kind = self.input.type
        if self.stem.type != _STEM_FOR_INPUT[kind]:
            raise PartError(
                "stem.type", f"{kind} input needs a {_STEM_FOR_INPUT[kind]}, got {self.stem.type}"
            )
        if self.head.type != _HEAD_FOR_INPUT[kind]:
            raise PartError(
                "head.type",
                f"{kind} input needs a {_HEAD_FOR_INPUT[kind]} head, got {self.head.type}",
            )
        for index, part in enumerate(self.body):
            if part.layer != _LAYER_FOR_INPUT[kind]:
                raise PartError(
                    f"body[{index}].layer",
                    f"{kind} input needs {_LAYER_FOR_INPUT[kind]} layers, got {part.layer}",
                )
        if not any(isinstance(part, DenseBlock) for part in self.body):
            raise PartError("body", "needs at least one dense_block")
        # Fill every block's missing fields from `defaults` once, here, so that
        # everything downstream sees fully resolved blocks.
        resolved = [
            part.with_defaults(self.defaults) if isinstance(part, DenseBlock) else part
            for part in self.body
        ]
        object.__setattr__(self, "body", resolved)
        return self

    @property
    def dense_blocks(self) -> list[DenseBlock]:
        """The body's dense blocks, in order."""
        return [part for part in self.body if isinstance(part, DenseBlock)]
