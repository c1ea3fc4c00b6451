"""A spec recovered from a checkpoint's tensor shapes: ``archspec from-weights``.

A DenseNet's state dict names every module and gives every tensor's shape, and that
is enough for most of its spec: the number of spatial dimensions (a convolution's
weight has two more axes), the input channels, the stem (one convolution, a deep
stem's widths, or an MLP's), each dense block's layers, growth rate, bottleneck and
kernel, each transition's width, which norm has running statistics, and the head's
kind and size. What shapes cannot say is guessed, and the written spec lists every guess in
one comment block at its top:

- input size: 224×224 images, 96³ volumes, 1000-sample signals (doubled while the
  network would shrink it below 1);
- stem: one convolution of kernel ≤ 3 is the paper's CIFAR stem (stride 1, padding
  k//2, no pooling); a larger one, or a deep stem, the ImageNet stem (stride 2, padding
  k//2, 3×3 max pool of stride 2, padding 1); a convolution stem without norm tensors,
  where the blocks have them, is the convolution alone (``norm: none, activation: none``,
  as the CIFAR stem);
- transitions: 2×2 average pooling, no activation after the projection; linear ones do
  not pool and end in ReLU (seed 001's MLP); activation ReLU everywhere else; no
  dropout; the head pools by average;
- a norm with affine weights but no running statistics: instance norm on feature maps,
  layer norm on feature vectors (group norm fits as well; its groups leave no trace);
- the order of blocks and transitions (numbered apart) follows the channels; where a
  transition keeps the width and either could come next, a transition follows a block;
- segmentation: FC-DenseNet's transposed convolutions have stride 2 and no padding, the skip's
  centre is cropped to, transitions down max-pool, dropout is 0.2 (the paper's); a U-Net decoder
  (segmentation-models-pytorch's) upsamples by nearest, and its encoder's final norm has no
  activation after it.

The spec is proved before it is returned: its network, built on the meta device (no
memory), must take the checkpoint strictly, key for key and shape for shape.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from archspec.builder import build_module
from archspec.errors import Problem, SpecError
from archspec.format.load import load_spec
from archspec.format.parts import DenseBlock
from archspec.format.parts.unet_block import UNetBlock
from archspec.format.parts.upsampling import TransitionUp
from archspec.format.schema import Spec
from archspec.format.shapes import static_pass
from archspec.weights import Renamed, key_problems, read_headers, remap_keys, renaming_note, shown_key

_TENSORS = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
# Every module a DenseNet's state dict names (archspec's names, torchvision's), and its role.
_MODULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("stem", re.compile(r"^features\.(?P<op>conv|linear)(?P<index>\d{1,6})$")),
    ("norm", re.compile(r"^features\.norm(?P<index>\d{1,6})$")),
    ("layer", re.compile(r"^features\.denseblock(?P<block>\d{1,6})\.denselayer(?P<index>\d{1,6})"
                         r"\.(?P<module>(?:norm|conv|linear)[12]?)$")),
    ("transition", re.compile(r"^features\.transition(?P<index>\d{1,6})\.(?P<module>norm|conv|linear)$")),
    ("head", re.compile(r"^(?P<module>classifier|regressor)$")),
    # Segmentation: FC-DenseNet's transposed convolutions, U-Net decoder blocks (segmentation-models-pytorch's
    # ``conv1``/``conv2``, each a convolution ``.0`` and its norm ``.1``).
    ("up", re.compile(r"^features\.transitionup(?P<index>\d{1,6})$")),
    ("decoder", re.compile(r"^features\.decoderblock(?P<index>\d{1,6})\.(?P<module>conv[12]\.[01])$")),
)
_SPATIAL = {1: "signal", 2: "image", 3: "volume"}
# Input sizes a checkpoint cannot tell: ImageNet's 224×224, a 96³ patch (MONAI's examples),
# 1000 samples (10 s of ECG at 100 Hz). Doubled while the network would shrink them below 1.
_INPUT_SIZE = {1: 1000, 2: 224, 3: 96}
_SIZE_FIELDS = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_SIZE_DOUBLINGS = 8
# A single convolution of kernel ≤ 3 is the paper's CIFAR stem (stride 1, no pooling); a larger
# one, or a deep stem, the ImageNet stem (stride 2, then a 3×3 max pool of stride 2).
_CIFAR_STEM_KERNEL = 3
_IMAGENET_POOL = {"pool": "max", "pool_kernel_size": 3, "pool_stride": 2, "pool_padding": 1}
_DEFAULT_KERNEL = DenseBlock.model_fields["kernel_size"].default  # written only where a block differs
_BC_COMPRESSION = 0.5  # DenseNet-BC's θ: torchvision, timm and MONAI halve the channels

Tensors = dict[str, tuple[int, ...]]
"""One module's tensors: name (``weight``, ``running_mean``…) → shape."""


def _refuse(message: str, file: str | None) -> SpecError:
    return SpecError(Problem(message, file=file))


@dataclass
class _Modules:
    """A checkpoint's modules by role, numbered as their names number them."""

    stem: dict[int, tuple[str, Tensors]] = field(default_factory=dict)
    norms: dict[int, Tensors] = field(default_factory=dict)
    blocks: dict[int, dict[int, dict[str, Tensors]]] = field(default_factory=dict)
    transitions: dict[int, dict[str, Tensors]] = field(default_factory=dict)
    heads: dict[str, Tensors] = field(default_factory=dict)
    ups: dict[int, Tensors] = field(default_factory=dict)
    decoders: dict[int, dict[str, Tensors]] = field(default_factory=dict)


def _sort_modules(renamed: Renamed, file: str | None) -> _Modules:
    """Every key to its module's role; a key that no DenseNet module has refuses the file."""
    modules = _Modules()
    strangers = []
    for key, value in renamed.state.items():
        module, _, tensor = key.rpartition(".")
        match = next(((role, found) for role, pattern in _MODULES if (found := pattern.match(module))), None)
        if match is None or tensor not in _TENSORS:
            strangers.append(shown_key(renamed.file_names[key]))
            continue
        role, found = match
        shape = tuple(value.shape)
        if role == "stem":
            op, tensors = modules.stem.setdefault(int(found["index"]), (found["op"], {}))
            if op != found["op"]:
                strangers.append(shown_key(renamed.file_names[key]))
            tensors[tensor] = shape
        elif role == "norm":
            modules.norms.setdefault(int(found["index"]), {})[tensor] = shape
        elif role == "layer":
            layer = modules.blocks.setdefault(int(found["block"]), {}).setdefault(int(found["index"]), {})
            layer.setdefault(found["module"], {})[tensor] = shape
        elif role == "transition":
            modules.transitions.setdefault(int(found["index"]), {}).setdefault(found["module"], {})[tensor] = shape
        elif role == "up":
            modules.ups.setdefault(int(found["index"]), {})[tensor] = shape
        elif role == "decoder":
            modules.decoders.setdefault(int(found["index"]), {}).setdefault(found["module"], {})[tensor] = shape
        else:
            modules.heads.setdefault(found["module"], {})[tensor] = shape
    if strangers:
        raise _refuse(
            f"not a DenseNet checkpoint: {len(strangers)} of {len(renamed.state)} keys name no DenseNet "
            f"module (torchvision's, timm's or MONAI's names), first: {strangers[0]}",
            file,
        )
    return modules


def _numbered(items: Mapping[int, Any], what: str, first: int, file: str | None) -> list[Any]:
    """Items numbered ``first``, ``first + 1``… in order; a gap refuses the file."""
    expected = list(range(first, first + len(items)))
    if sorted(items) != expected:
        gap = next(number for number in expected if number not in items)
        raise _refuse(f"not a DenseNet checkpoint: {what}{gap} is missing ({len(items)} numbered up to "
                      f"{max(items)})", file)
    return [items[number] for number in expected]


def _weight(tensors: Tensors | None, where: str, ndims: tuple[int, ...], file: str | None) -> tuple[int, ...]:
    """The shape of a projection's weight, refused unless it has one of ``ndims`` axes, none empty."""
    shape = (tensors or {}).get("weight")
    if shape is None or len(shape) not in ndims or 0 in shape:
        got = "none" if shape is None else f"shape ({', '.join(map(str, shape))})"
        raise _refuse(f"not a DenseNet checkpoint: {where}.weight has {got}", file)
    return shape


def _kernel(shape: tuple[int, ...], where: str, file: str | None) -> int:
    """The one kernel size of a convolution's weight ``(out, in, k, k…)``; 1 for a linear map."""
    sizes = set(shape[2:]) or {1}
    if len(sizes) > 1:
        raise _refuse(f"cannot describe {where}: its kernel {'×'.join(map(str, shape[2:]))} is not square", file)
    return sizes.pop()


@dataclass(frozen=True)
class _Norm:
    """A norm as the checkpoint shows it."""

    kind: str
    guessed: bool
    """Affine weights without running statistics fit several norms; ``kind`` is one of them."""


def _norm(tensors: Tensors | None, dims: int) -> _Norm:
    if tensors is None:
        return _Norm("none", True)  # or a norm without affine weights (MONAI's instance norm)
    if "running_mean" in tensors or "running_var" in tensors:
        return _Norm("batch_norm", False)
    # Group norm's groups and the choice between group, instance and layer norm leave no trace.
    return _Norm("layer_norm" if dims == 0 else "instance_norm", True)


def _norm_guess(norm: _Norm) -> str | None:
    """How a guessed norm is written, and why; ``None`` where the checkpoint tells it."""
    if not norm.guessed:
        return None
    if norm.kind == "none":
        return ("norm none (no norm tensors; a norm without affine weights, as MONAI's instance norm, "
                "leaves none either)")
    others = "group_norm" if norm.kind == "layer_norm" else "group_norm or layer_norm"
    return (f"norm {norm.kind} (affine weights without running statistics; {others} fit as well, "
            "and group norm's groups leave no trace)")


@dataclass
class _Line:
    """One part of the written spec: its fields, as one flow mapping."""

    fields: dict[str, Any]

    def text(self) -> str:
        return yaml.safe_dump(self.fields, default_flow_style=True, sort_keys=False, width=1 << 30).strip()


@dataclass
class _Guesses:
    """The values a checkpoint cannot tell, as the spec writes them: one line per guess, naming every
    part it was made for, so that the spec's one comment block says all that was not read."""

    parts: dict[str, list[str]] = field(default_factory=dict)
    """What was guessed (``"pool avg, pool_size 2 (why)"``) → the parts written with it."""

    def add(self, part: str, guess: str | None) -> None:
        if guess is not None:
            self.parts.setdefault(guess, []).append(part)

    def lines(self) -> list[str]:
        return [f"#   {', '.join(parts)}: {guess}" for guess, parts in self.parts.items()]


@dataclass
class _Recovered:
    """What the shapes say, part by part, before it is written out."""

    dims: int
    channels: int
    stem: _Line
    stem_width: int
    defaults: _Line
    body: list[_Line]
    head: _Line
    guesses: _Guesses


def _stem(modules: _Modules, file: str | None) -> tuple[int, int, _Line, int, str | None]:
    """Spatial dims, input channels, the stem's line, its output width, and what it guesses."""
    if not modules.stem:
        raise _refuse("not a DenseNet checkpoint: no stem (features.conv0 or features.linear0)", file)
    ops = sorted({op for op, _ in modules.stem.values()})
    if len(ops) > 1:
        raise _refuse("not a DenseNet checkpoint: its stem mixes convolutions and linear layers", file)
    stem = _numbered(modules.stem, f"features.{ops[0]}", 0, file)
    op = ops[0]
    if op == "linear":
        shapes = [_weight(tensors, f"features.linear{i}", (2,), file) for i, (_, tensors) in enumerate(stem)]
        line = _Line({"type": "mlp_stem", "hidden": [shape[0] for shape in shapes],
                      "bias": "bias" in stem[0][1], "drop_rate": 0.0})
        return 0, shapes[0][1], line, shapes[-1][0], None
    shapes = [_weight(tensors, f"features.conv{i}", (3, 4, 5), file) for i, (_, tensors) in enumerate(stem)]
    dims = len(shapes[0]) - 2
    kernel = _kernel(shapes[0], "features.conv0", file)
    fields: dict[str, Any]
    if len(shapes) > 1:
        fields = {"type": "deep_stem", "widths": [shape[0] for shape in shapes], "kernel_size": kernel,
                  "bias": "bias" in stem[0][1], "stride": 2, "padding": kernel // 2, **_IMAGENET_POOL}
        guess = (f"stride 2, padding {kernel // 2}, pool max (timm's deep stem; densenetblur121d's "
                 "blur pool leaves no trace either)")
    elif kernel <= _CIFAR_STEM_KERNEL:
        fields = {"type": "conv_stem", "out_channels": shapes[0][0], "kernel_size": kernel,
                  "bias": "bias" in stem[0][1], "stride": 1, "padding": kernel // 2, "pool": "none"}
        guess = f"stride 1, padding {kernel // 2}, pool none (one {kernel}-wide convolution: the paper's CIFAR stem)"
    else:
        fields = {"type": "conv_stem", "out_channels": shapes[0][0], "kernel_size": kernel,
                  "bias": "bias" in stem[0][1], "stride": 2, "padding": kernel // 2, **_IMAGENET_POOL}
        guess = f"stride 2, padding {kernel // 2}, pool max (one {kernel}-wide convolution: the ImageNet stem)"
    return dims, shapes[0][1], _Line(fields), shapes[-1][0], guess


@dataclass(frozen=True)
class _Block:
    number: int
    num_layers: int
    in_width: int
    fields: dict[str, Any]
    """``growth_rate``, ``bn_size``, ``bias``, ``kernel_size``."""
    norm: _Norm

    @property
    def out_width(self) -> int:
        return self.in_width + self.num_layers * self.fields["growth_rate"]


def _block(number: int, layers: dict[int, dict[str, Tensors]], dims: int, file: str | None) -> _Block:
    """A dense block from its first layer's shapes (the others must agree: the final check sees to it)."""
    first = _numbered(layers, f"features.denseblock{number}.denselayer", 1, file)[0]
    where = f"features.denseblock{number}.denselayer1"
    op = "conv" if dims else "linear"
    ndims = (dims + 2,)
    if f"{op}1" in first or f"{op}2" in first:
        squeeze = _weight(first.get(f"{op}1"), f"{where}.{op}1", ndims, file)
        last = _weight(first.get(f"{op}2"), f"{where}.{op}2", ndims, file)
        growth = last[0]
        if squeeze[0] % growth:
            raise _refuse(f"cannot describe {where}: its bottleneck of {squeeze[0]} is not a multiple "
                          f"of its growth rate {growth}", file)
        bn_size, norm_name = squeeze[0] // growth, "norm1"
    else:
        squeeze = last = _weight(first.get(op), f"{where}.{op}", ndims, file)
        growth, bn_size, norm_name = last[0], None, "norm"
    fields = {"growth_rate": growth, "bn_size": bn_size, "bias": "bias" in first.get(f"{op}1", first.get(op, {}))}
    if dims:
        fields["kernel_size"] = _kernel(last, f"{where}.{op}", file)
    return _Block(number, len(layers), squeeze[1], fields, _norm(first.get(norm_name), dims))


@dataclass(frozen=True)
class _Transition:
    number: int
    in_width: int
    out_width: int
    bias: bool
    norm: _Norm


def _transition(number: int, modules: dict[str, Tensors], dims: int, file: str | None) -> _Transition:
    op = "conv" if dims else "linear"
    shape = _weight(modules.get(op), f"features.transition{number}.{op}", (dims + 2,), file)
    return _Transition(number, shape[1], shape[0], "bias" in modules[op], _norm(modules.get("norm"), dims))


def _compression(in_width: int, out_width: int) -> dict[str, Any]:
    """``compression`` where DenseNet-BC's 0.5, or else a three-digit fraction, gives exactly
    ``out_width`` (the transition floors ``in × compression``); ``out_channels`` otherwise."""
    for ratio in (_BC_COMPRESSION, round(out_width / in_width, 3)):
        if 0 < ratio <= 1 and int(in_width * ratio) == out_width:
            return {"compression": ratio}
    return {"out_channels": out_width}


def _chain(blocks: list[_Block], transitions: list[_Transition], width: int,
           file: str | None) -> list[_Block | _Transition]:
    """The body in order, following the channels: dense blocks and transitions are numbered apart,
    so a transition goes wherever the width it reads arrives (after a block, by preference)."""
    order: list[_Block | _Transition] = []
    b = t = 0
    for _ in range(len(blocks) + len(transitions)):  # every step places one part
        block_fits = b < len(blocks) and blocks[b].in_width == width
        transition_fits = t < len(transitions) and transitions[t].in_width == width
        after_block = bool(order) and isinstance(order[-1], _Block)
        if transition_fits and (not block_fits or after_block):
            order.append(transitions[t])
            t += 1
        elif block_fits:
            order.append(blocks[b])
            b += 1
        else:
            after = f"features.{_module_name(order[-1])}" if order else "the stem"
            nexts = [f"features.denseblock{blocks[b].number} reads {blocks[b].in_width}"] if b < len(blocks) else []
            if t < len(transitions):
                nexts.append(f"features.transition{transitions[t].number} reads {transitions[t].in_width}")
            raise _refuse(f"cannot describe this DenseNet: {after} gives {width} channels, but "
                          f"{' and '.join(nexts)}", file)
        width = order[-1].out_width
    return order


def _module_name(part: _Block | _Transition) -> str:
    return f"denseblock{part.number}" if isinstance(part, _Block) else f"transition{part.number}"


def _norm_field(norm: _Norm, default: _Norm) -> dict[str, Any]:
    return {} if norm.kind == default.kind else {"norm": norm.kind}


def _block_line(part: _Block, defaults: _Line, first: _Block, guesses: _Guesses, where: str,
                **extra: Any) -> _Line:
    """A dense block's line: the fields where it differs from ``defaults``."""
    guesses.add(where, _norm_guess(part.norm) if part.norm != first.norm else None)
    fields = {key: value for key, value in part.fields.items() if value != defaults.fields.get(key, _DEFAULT_KERNEL)}
    layer = {} if "kernel_size" in part.fields else {"layer": "linear"}
    return _Line({"type": "dense_block", "num_layers": part.num_layers, **layer, **fields,
                  **_norm_field(part.norm, first.norm), **extra})


def _transition_line(part: _Transition, first: _Block, guesses: _Guesses, where: str, **pool: Any) -> _Line:
    """A transition's line, with what its shapes cannot tell (pooling, dropout) from ``pool``."""
    guesses.add(where, _norm_guess(part.norm) if part.norm != first.norm else None)
    layer = {"layer": pool.pop("layer")} if "layer" in pool else {}
    return _Line({"type": "transition", **_compression(part.in_width, part.out_width), **layer,
                  **({"bias": True} if part.bias else {}), **_norm_field(part.norm, first.norm), **pool})


def _recover(renamed: Renamed, file: str | None) -> _Recovered:
    modules = _sort_modules(renamed, file)
    dims, channels, stem, stem_width, stem_guess = _stem(modules, file)
    if not modules.blocks:
        raise _refuse("not a DenseNet checkpoint: no dense block (features.denseblock1)", file)
    blocks = [_block(number, layers, dims, file)
              for number, layers in enumerate(_numbered(modules.blocks, "features.denseblock", 1, file), 1)]
    transitions = [_transition(number, parts, dims, file)
                   for number, parts in enumerate(_numbered(modules.transitions, "features.transition", 1, file), 1)]

    guesses = _Guesses()
    guesses.add("stem", stem_guess)
    first = blocks[0]
    defaults = _Line({**first.fields, "norm": first.norm.kind, "activation": "relu", "drop_rate": 0.0})
    defaults.fields.pop("kernel_size", None)
    if stem.fields["type"] != "mlp_stem":
        stem_norm = _norm(modules.norms.get(0), dims)
        if stem.fields["type"] == "conv_stem" and stem_norm.kind == "none" and first.norm.kind != "none":
            # The blocks normalise but the stem keeps no norm tensors: the convolution alone, as in
            # the paper's CIFAR stem (an inherited ReLU would clip the first features).
            stem.fields.update(norm="none", activation="none")
            guesses.add("stem", "norm none, activation none (no norm tensors, unlike the blocks: the "
                                "convolution alone, as in the paper's CIFAR stem)")
        else:
            stem.fields.update(_norm_field(stem_norm, first.norm))
            guesses.add("stem", _norm_guess(stem_norm) if stem_norm != first.norm else None)
    guesses.add("defaults", "activation relu (an activation leaves no trace)")
    guesses.add("defaults", _norm_guess(first.norm))
    stem_norms = 0 if stem.fields["type"] == "mlp_stem" else len(modules.stem)
    if modules.ups or modules.decoders:
        head, head_width = _segmentation_head(modules, dims, file)
        if modules.ups and modules.decoders:
            raise _refuse("cannot describe this DenseNet: it has both transitions up (FC-DenseNet's) and "
                          "decoder blocks (a U-Net's)", file)
        if modules.ups:
            body = _fc_densenet(modules, blocks, transitions, stem_width, head_width, dims, defaults, guesses, file)
        else:
            body = _unet(modules, blocks, transitions, stem_width, stem_norms, dims, defaults, guesses, file)
        return _Recovered(dims, channels, stem, stem_width, defaults, body, head, guesses)

    order = _chain(blocks, transitions, stem_width, file)
    body = []
    for index, part in enumerate(order):
        where = f"body[{index}]"
        if isinstance(part, _Block):
            body.append(_block_line(part, defaults, first, guesses, where))
        elif dims:
            body.append(_transition_line(part, first, guesses, where, pool="avg", pool_size=2))
            guesses.add(where, "pool avg, pool_size 2 (a pool leaves no trace)")
        else:
            body.append(_transition_line(part, first, guesses, where, layer="linear", pool="none",
                                         post_activation="relu"))
            guesses.add(where, "post_activation relu (seed 001's MLP transitions end in ReLU)")
    head = _head(modules, _head_norm(modules, stem_norms, dims, file), dims, first.norm, guesses, file)
    guesses.add("everywhere", "drop_rate 0.0 (dropout leaves no trace, and eval mode skips it)")
    return _Recovered(dims, channels, stem, stem_width, defaults, body, head, guesses)


def _segmentation_head(modules: _Modules, dims: int, file: str | None) -> tuple[_Line, int]:
    """The per-position classifier's line and the width it reads."""
    if set(modules.heads) != {"classifier"}:
        found = " and ".join(sorted(modules.heads)) or "none"
        raise _refuse(f"not a segmentation checkpoint: needs one output convolution, classifier "
                      f"(segmentation-models-pytorch's segmentation_head.0); found {found}", file)
    shape = _weight(modules.heads["classifier"], "classifier", (dims + 2,), file)
    return (_Line({"type": "segmentation", "num_classes": shape[0], "kernel_size": _kernel(shape, "classifier", file)}),
            shape[1])


def _width_check(reader: str, reads: int, writer: str, gives: int, file: str | None) -> None:
    if reads != gives:
        raise _refuse(f"cannot describe this DenseNet: {writer} gives {gives} channels, but {reader} reads {reads}",
                      file)


@dataclass(frozen=True)
class _Up:
    """A transposed convolution of FC-DenseNet's way up: ``weight`` is ``(in, out, k, k…)``."""

    number: int
    in_width: int
    out_width: int
    kernel: int
    bias: bool


def _up(number: int, tensors: Tensors, dims: int, file: str | None) -> _Up:
    where = f"features.transitionup{number}"
    shape = _weight(tensors, where, (dims + 2,), file)
    return _Up(number, shape[0], shape[1], _kernel(shape, where, file), "bias" in tensors)


_FC_DROP_RATE = 0.2  # FC-DenseNet's dropout after every dense layer and transition down (Jégou et al.)
_UP_KERNEL = TransitionUp.model_fields["kernel_size"].default
_UP_SCALE = TransitionUp.model_fields["scale"].default


def _fc_densenet(modules: _Modules, blocks: list[_Block], transitions: list[_Transition], width: int,
                 head_width: int, dims: int, defaults: _Line, guesses: _Guesses, file: str | None) -> list[_Line]:
    """FC-DenseNet's body: ``D`` blocks each followed by a transition down, a bottleneck block, then
    ``D`` times a transposed convolution of the block below, the skip of the matching down block and
    a dense block. Whether a block outputs its new features only is read from the width its reader takes."""
    ups = [_up(number, tensors, dims, file)
           for number, tensors in enumerate(_numbered(modules.ups, "features.transitionup", 1, file), 1)]
    downs = len(transitions)
    if len(ups) != downs or len(blocks) != 2 * downs + 1:
        raise _refuse(f"cannot describe this FC-DenseNet: {len(blocks)} dense blocks, {downs} transitions down "
                      f"and {len(ups)} up, where one up for each down and 2 × {downs} + 1 = {2 * downs + 1} "
                      "dense blocks are expected", file)
    first = blocks[0]
    defaults.fields["drop_rate"] = _FC_DROP_RATE
    body: list[_Line] = []
    skips: list[tuple[str, int]] = []  # the down blocks' outputs, read on the way up in reverse
    writer = "the stem"
    for index, block in enumerate(blocks):
        name = f"features.denseblock{block.number}"
        _width_check(name, block.in_width, writer, width, file)
        where = f"body[{len(body)}]"
        if index < downs:
            body.append(_block_line(block, defaults, first, guesses, where))
            skips.append((where, block.out_width))
            transition = transitions[index]
            _width_check(f"features.transition{transition.number}", transition.in_width, name, block.out_width, file)
            where = f"body[{len(body)}]"
            body.append(_transition_line(transition, first, guesses, where, drop_rate=_FC_DROP_RATE, pool="max"))
            guesses.add(where, "pool max (FC-DenseNet's 2×2 max pool; a pool leaves no trace)")
            width, writer = transition.out_width, f"features.transition{transition.number}"
            continue
        up = ups[index - downs] if index < 2 * downs else None
        reader, reads = (f"features.transitionup{up.number}", up.in_width) if up else ("classifier", head_width)
        new = block.num_layers * block.fields["growth_rate"]
        if reads not in (new, block.out_width):
            raise _refuse(f"cannot describe this FC-DenseNet: {reader} reads {reads} channels, but {name} gives "
                          f"{block.out_width} (input and new features) or {new} (new features only)", file)
        body.append(_block_line(block, defaults, first, guesses, where, **({"output": "new"} if reads == new else {})))
        if up is None:
            break
        where = f"body[{len(body)}]"
        body.append(_Line({"type": "transition_up", **({"out_channels": up.out_width} if up.out_width != reads else {}),
                           **({"kernel_size": up.kernel} if up.kernel != _UP_KERNEL else {}),
                           **({} if up.bias else {"bias": False})}))
        guesses.add(where, f"scale {_UP_SCALE}, padding 0 (FC-DenseNet's unpadded transposed convolution of "
                           "stride 2; stride and padding leave no trace)")
        skip, skip_width = skips.pop()
        # An unpadded transposed convolution of stride 2 and kernel ≥ 2 gives a row or more than the
        # skip has (2n - 2 + k): its centre is kept, as the authors' code crops it.
        fit = "crop" if up.kernel >= _UP_SCALE else "pad"
        where = f"body[{len(body)}]"
        body.append(_Line({"type": "concat", "skip": skip, "fit": fit}))
        guesses.add(where, f"fit {fit} (how the skip's size is met leaves no trace)")
        width, writer = up.out_width + skip_width, f"features.transitionup{up.number} and the skip {skip}"
    guesses.add("everywhere", f"drop_rate {_FC_DROP_RATE} (FC-DenseNet's; dropout leaves no trace, and eval "
                              "mode skips it)")
    return body


_UNET_KERNEL = UNetBlock.model_fields["kernel_size"].default


def _unet(modules: _Modules, blocks: list[_Block], transitions: list[_Transition], width: int, stem_norms: int,
          dims: int, defaults: _Line, guesses: _Guesses, file: str | None) -> list[_Line]:
    """A DenseNet encoder (its final norm a ``norm`` part) and U-Net decoder blocks, which read the
    stem's activation and each transition's (before its projection) on the way up, as
    segmentation-models-pytorch's DenseNet encoder gives them, deepest first."""
    first = blocks[0]
    body: list[_Line] = []
    taps = ["stem.activation"]
    for index, part in enumerate(_chain(blocks, transitions, width, file)):
        where = f"body[{index}]"
        if isinstance(part, _Block):
            body.append(_block_line(part, defaults, first, guesses, where))
        else:
            body.append(_transition_line(part, first, guesses, where, pool="avg", pool_size=2))
            guesses.add(where, "pool avg, pool_size 2 (a pool leaves no trace)")
            taps.append(f"{where}.activation")
    norms = sorted(index for index in modules.norms if index >= stem_norms)
    if len(norms) > 1:
        raise _refuse(f"cannot describe this U-Net: {len(norms)} norms after the encoder's stem "
                      f"(features.norm{norms[0]}, features.norm{norms[1]}), one expected", file)
    if norms:
        norm = _norm(modules.norms[norms[0]], dims)
        where = f"body[{len(body)}]"
        guesses.add(where, _norm_guess(norm) if norm != first.norm else None)
        body.append(_Line({"type": "norm", **_norm_field(norm, first.norm)}))
        guesses.add(where, "activation none (segmentation-models-pytorch's encoder ends at norm5, without "
                           "ReLU; an activation leaves no trace)")
    decoders = _numbered(modules.decoders, "features.decoderblock", 1, file)
    if len(decoders) != len(taps) + 1:
        # segmentation-models-pytorch keeps its whole DenseNet encoder at every encoder_depth, and
        # runs only the part a shallower decoder reads: the rest is in the checkpoint, never used.
        raise _refuse(f"cannot describe this U-Net: its {len(decoders)} decoder blocks read the encoder at depth "
                      f"{len(decoders)} (encoder_depth={len(decoders)}), but the checkpoint holds the encoder's "
                      f"modules to depth {len(taps) + 1}, which its forward never runs; a spec's decoder starts "
                      f"where its encoder ends (encoder_depth={len(taps) + 1})", file)
    for number, decoder in enumerate(decoders, 1):
        where = f"features.decoderblock{number}"
        shape = _weight(decoder.get("conv1.0"), f"{where}.conv1.0", (dims + 2,), file)
        kernel = _kernel(shape, f"{where}.conv1.0", file)
        norm = _norm(decoder.get("conv1.1"), dims)
        at = f"body[{len(body)}]"
        guesses.add(at, _norm_guess(norm) if norm != first.norm else None)
        skip = {"skip": taps.pop()} if taps else {}
        body.append(_Line({"type": "unet_block", **skip, "out_channels": shape[0],
                           **({"kernel_size": kernel} if kernel != _UNET_KERNEL else {}),
                           **_norm_field(norm, first.norm)}))
        guesses.add(at, "mode nearest (segmentation-models-pytorch's default decoder_interpolation; "
                        "interpolation leaves no trace)")
    guesses.add("everywhere", "drop_rate 0.0 (dropout leaves no trace, and eval mode skips it)")
    return body


def _head_norm(modules: _Modules, stem_norms: int, dims: int, file: str | None) -> _Norm:
    """The norm after the last block: whichever ``features.normK`` the stem does not own. torchvision,
    timm and MONAI call it ``norm5`` whatever the number of blocks; archspec numbers it after them."""
    found = sorted(index for index in modules.norms if index >= stem_norms)
    if len(found) > 1:
        names = ", ".join(f"features.norm{index}" for index in found[:3])
        raise _refuse(f"not a DenseNet checkpoint: {len(found)} norms after the stem ({names}…), one expected",
                      file)
    return _norm(modules.norms[found[0]] if found else None, dims)


def _head(modules: _Modules, norm: _Norm, dims: int, default: _Norm, guesses: _Guesses,
          file: str | None) -> _Line:
    if len(modules.heads) != 1:
        found = " and ".join(sorted(modules.heads)) or "neither"
        raise _refuse(f"not a DenseNet checkpoint: needs one output layer, classifier or regressor; found {found}",
                      file)
    (name, tensors), = modules.heads.items()
    outputs = _weight(tensors, name, (2,), file)[0]
    fields = ({"type": "classifier", "num_classes": outputs} if name == "classifier"
              else {"type": "regressor", "out_features": outputs})
    fields.update(_norm_field(norm, default))
    if dims:
        fields["pool"] = "avg"
    fields["drop_rate"] = 0.0
    guesses.add("head", "pool avg (a pool leaves no trace)" if dims else None)
    guesses.add("head", _norm_guess(norm) if norm != default else None)
    return _Line(fields)


def _input(recovered: _Recovered, doublings: int) -> tuple[_Line, str | None]:
    """The input's line and what it guesses (a checkpoint holds no input size)."""
    if recovered.dims == 0:
        return _Line({"type": "tabular", "features": recovered.channels}), None
    size = _INPUT_SIZE[recovered.dims] << doublings
    sizes = {name: size for name in _SIZE_FIELDS[recovered.dims]}
    why = (f"{_INPUT_SIZE[recovered.dims]} doubled until the network fits" if doublings
           else "a default size")
    return (_Line({"type": _SPATIAL[recovered.dims], "channels": recovered.channels, **sizes}),
            ", ".join(f"{name} {size}" for name in sizes) + f" ({why})")


def _text(recovered: _Recovered, input_part: tuple[_Line, str | None], name: str, source: str | None,
          library: str, params: int, tensors: int) -> str:
    version = typing.get_args(Spec.model_fields["archspec"].annotation)[-1]
    input_line, input_guess = input_part
    guesses = _Guesses()
    guesses.add("input", input_guess)
    for guess, parts in recovered.guesses.parts.items():
        guesses.parts.setdefault(guess, []).extend(parts)
    header = [
        f"# Recovered by `archspec from-weights` from a checkpoint's tensor shapes ({library}'s key names):",
        f"# {params:,} parameters in {tensors:,} tensors. A checkpoint holds shapes, not behaviour; these",
        "# values are guessed (check them against the code that trained the network):",
        *guesses.lines(),
    ]
    head = yaml.safe_dump({"archspec": version, "name": name,
                           "description": f"Recovered by archspec from-weights from {source or 'a state dict'}."},
                          sort_keys=False, width=1 << 30, allow_unicode=False)
    lines = [
        *header,
        head.rstrip("\n"),
        f"input: {input_line.text()}",
        f"stem: {recovered.stem.text()}",
        f"defaults: {recovered.defaults.text()}",
        "body:",
        *(f"  - {line.text()}" for line in recovered.body),
        f"head: {recovered.head.text()}",
    ]
    return "\n".join(lines) + "\n"


def _name(source: str) -> str:
    """A spec name (letters, digits, ``_.-``) from a file's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)[:100] or "recovered"


def spec_from_state(state: Mapping[str, Tensor] | Renamed, *, source: str | None = None,
                    file: str | None = None) -> str:
    """The spec (YAML text) whose network takes ``state`` strictly, recovered from its shapes.

    Args:
        state: a state dict (any library's key names) or one already renamed.
        source: the file's name, for the spec's name and description; none for a state dict in memory.
        file: the file named in a refusal.

    Returns:
        The spec as YAML, with a comment beside every value the checkpoint does not hold.

    Raises:
        SpecError: one line: the keys are not a DenseNet's, or no spec describes them.
    """
    renamed = state if isinstance(state, Renamed) else remap_keys(state)
    if not renamed.state:
        raise _refuse("not a DenseNet checkpoint: it holds no tensors", file)
    if renamed.clashes:
        raise _refuse(f"not a DenseNet checkpoint: {shown_key(renamed.clashes[0])} names a tensor another "
                      f"key names after renaming {renamed.key_map.library}'s keys", file)
    recovered = _recover(renamed, file)
    name = _name(source) if source else "recovered"
    tensors = len(renamed.state)
    for doublings in range(_SIZE_DOUBLINGS + 1):  # the network may shrink the default size below 1
        text = _text(recovered, _input(recovered, doublings), name, source, renamed.key_map.library, 0, tensors)
        try:
            spec = load_spec(yaml.safe_load(text))
            break
        except SpecError as error:
            if doublings == _SIZE_DOUBLINGS or not recovered.dims:
                problem = error.problems[0]
                where = f"{problem.path}: " if problem.path else ""
                raise _refuse(f"cannot describe this DenseNet as a spec: {where}{problem.message}", file) from None
    _prove(spec, renamed, file)
    params = static_pass(spec).params
    return _text(recovered, _input(recovered, doublings), name, source, renamed.key_map.library, params, tensors)


def _prove(spec: Spec, renamed: Renamed, file: str | None) -> None:
    """Build the spec's network on the meta device and refuse unless it takes ``renamed`` strictly."""
    with torch.device("meta"):
        model = build_module(static_pass(spec))
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = key_problems(expected, renamed)
    if problems:
        note = "; ".join(problem.message for problem in renaming_note(renamed))
        found = "; ".join(problem.message for problem in problems)
        raise _refuse(f"cannot describe this DenseNet as a spec: the recovered network does not take it: "
                      f"{found}" + (f" ({note})" if note else ""), file)


def spec_from_weights(path: str | Path) -> str:
    """The spec (YAML text) whose network takes the checkpoint at ``path`` strictly.

    Args:
        path: a ``.pt``/``.pth`` state dict (read with ``weights_only=True``) or a
            ``.safetensors`` file, with torchvision's, timm's or MONAI's key names.

    Returns:
        The spec as YAML; values the checkpoint cannot tell carry a comment saying so.

    Raises:
        SpecError: the file cannot be read safely, or it is not a DenseNet that a spec
            can describe (one line saying why).
    """
    return spec_from_state(remap_keys(read_headers(path)), source=Path(path).name, file=str(path))
