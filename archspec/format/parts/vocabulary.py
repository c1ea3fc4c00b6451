"""The choices several kinds of part share: norms, activations, pools, layer kinds, inheritance.

A norm or activation is written as a name (``batch_norm``, ``gelu``) or, where it takes a
number, as a mapping (``{type: group_norm, groups: 8}``, ``{type: leaky_relu, negative_slope: 0.1}``).
The counting rules for each choice live here beside it; the torch modules are in
``archspec/blocks.py``. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt

from archspec.errors import Problem, SpecError

LayerKind = Literal["conv", "linear"]
INHERIT = "inherit"
"""A field's value when it takes the spec's ``defaults`` (what leaving it out means)."""
Inherit = Literal["inherit"]


def _odd(kernel_size: int) -> int:
    if kernel_size % 2 == 0:
        raise ValueError(f"must be odd so that padding keeps the size, got {kernel_size}")
    return kernel_size


OddKernel = Annotated[PositiveInt, AfterValidator(_odd)]
"""A convolution's kernel that a padding of ``kernel_size // 2`` keeps the size with."""


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True,
                              allow_inf_nan=False)


class GroupNorm(_Choice):
    """Group normalisation over ``groups`` groups of channels."""

    type: Literal["group_norm"]
    """Tag: group norm."""
    groups: PositiveInt = 32
    """Number of channel groups; must divide every width it normalises."""


class LeakyReLU(_Choice):
    """Leaky ReLU with a chosen slope for negative inputs."""

    type: Literal["leaky_relu"]
    """Tag: leaky ReLU."""
    negative_slope: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.01
    """Slope for negative inputs."""


NormName = Literal["batch_norm", "group_norm", "instance_norm", "layer_norm", "none"]
Norm = Union[NormName, GroupNorm]
ActivationName = Literal["relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "none"]
Activation = Union[ActivationName, LeakyReLU]

DEFAULT_GROUPS = GroupNorm.model_fields["groups"].default
DEFAULT_SLOPE = LeakyReLU.model_fields["negative_slope"].default
# Activations applied in place (their output is what backward reads); the others keep
# their input as well, a second tensor the width of the layer.
_IN_PLACE = frozenset({"relu", "relu6", "leaky_relu", "elu", "none"})


def norm_name(norm: Norm) -> str:
    """``batch_norm``, ``group_norm``… whichever form the norm was written in."""
    return norm if isinstance(norm, str) else norm.type


def norm_groups(norm: Norm) -> int:
    """Groups of a group norm (32 unless written), 0 for any other norm."""
    if norm_name(norm) != "group_norm":
        return 0
    return norm.groups if isinstance(norm, GroupNorm) else DEFAULT_GROUPS


def norms_in(part: BaseModel) -> Iterator[tuple[str, Norm]]:
    """Each field of ``part`` that chooses a norm, by name, with its choice (``inherit`` left out).

    Found by the field's type, not its name, so a kind of part with a second norm field is covered.
    """
    for name, field in type(part).model_fields.items():
        if GroupNorm in get_args(field.annotation) and (value := getattr(part, name)) != INHERIT:
            yield name, value


def activation_name(activation: Activation) -> str:
    """``relu``, ``leaky_relu``… whichever form the activation was written in."""
    return activation if isinstance(activation, str) else activation.type


def negative_slope(activation: Activation) -> float:
    """Slope of a leaky ReLU (0.01 unless written); 0 for any other activation."""
    if activation_name(activation) != "leaky_relu":
        return 0.0
    return activation.negative_slope if isinstance(activation, LeakyReLU) else DEFAULT_SLOPE


def check_norm(norm: Norm, width: int | Sequence[int], shape: tuple[int, ...], path: str) -> None:
    """Refuse a norm that cannot normalise ``width`` channels of a ``shape`` sample here.

    ``width`` may be every width the part's norms see: a group count that fails is then
    reported with all the widths it does not divide (``load.validate`` adds the counts that
    divide every width in the network).

    Raises:
        SpecError: groups that do not divide a width, a layer norm on feature maps, or an
            instance norm on feature vectors or on a single position.
    """
    widths = (width,) if isinstance(width, int) else tuple(dict.fromkeys(width))
    spatial_dims = len(shape) - 1
    positions = 1
    for size in shape[1:]:
        positions *= size
    groups = norm_groups(norm)
    if groups and (split := [each for each in widths if each % groups]):
        raise SpecError(Problem(f"group_norm with {groups} groups cannot split {_and(split)} channels",
                                path=path))
    if norm_name(norm) == "layer_norm" and spatial_dims:
        raise SpecError(Problem("layer_norm applies to linear layers; for feature maps use "
                                "{type: group_norm, groups: 1}", path=path))
    if norm_name(norm) == "instance_norm" and not spatial_dims:
        raise SpecError(Problem("instance_norm normalises over positions and feature vectors have "
                                "none; use layer_norm", path=path))
    if norm_name(norm) == "instance_norm" and positions < 2:
        raise SpecError(Problem(f"instance_norm needs more than one position per channel, got "
                                f"{'×'.join(map(str, shape[1:]))}; use a larger input", path=path))


def _and(numbers: Sequence[int]) -> str:
    """``44``, ``36 or 68``, ``12, 36 or 68``."""
    words = [str(number) for number in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_blur(shape: tuple[int, ...], path: str) -> None:
    """Refuse a blur pool over an axis too short to reflect-pad.

    Raises:
        SpecError: an axis has fewer than 2 positions.
    """
    if any(size < 2 for size in shape[1:]):
        raise SpecError(Problem(f"a blur pool needs at least 2 positions per axis, got "
                                f"{'×'.join(map(str, shape[1:]))}", path=path))


def norm_params(width: int, norm: Norm) -> int:
    """Affine parameters of a norm over ``width`` channels (a weight and a bias each)."""
    return 0 if norm_name(norm) == "none" else 2 * width


def norm_act_values(width: int, norm: Norm, activation: Activation) -> int:
    """Channels' worth of values a norm-activation pair saves for backward, besides the
    output that the next layer saves: the norm's input, and a non-in-place activation's input."""
    saved = 0 if norm_name(norm) == "none" else 1
    saved += 0 if activation_name(activation) in _IN_PLACE else 1
    return saved * width


def keeps_output(activation: Activation) -> bool:
    """Whether an in-place activation saves its own output for backward."""
    return activation_name(activation) not in ("none", "gelu", "silu")


PoolKind = Literal["max", "avg", "blur", "none"]
BLUR_TAPS = 3  # the binomial [1, 2, 1] filter of timm's BlurPool2d, reflect-padded by 1

