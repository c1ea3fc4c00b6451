"""Weights from a local file into a built network: safe reading, key remaps, strict checks.

A weights file is untrusted input. ``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)``, which refuses pickles that would run code;
``.safetensors`` files hold no code at all. Every failure is a ``SpecError``
naming the file, with a short diff when the keys or shapes do not fit.

torchvision's names are archspec's; MONAI's and torchvision's pre-0.4 names are
renamed by one key map per library (``KEY_MAPS``), the one the file's keys select.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from archspec.errors import Problem, SpecError, first_line

_SHOWN = 5  # keys listed per kind of mismatch; the rest are counted
_MESSAGE_CHARS = 200  # a loader's own message is cut to one short line
_KEY_CHARS = 120  # a key is cut to this in messages (torchvision's longest is 55)
_UNPICKLER_MARKER = "WeightsUnpickler error:"  # torch's detail follows this in its long message

# Checkpoints written before torchvision renamed `norm.1` to `norm1` (its `_load_state_dict`).
_LEGACY_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$"
)


@dataclass(frozen=True)
class KeyMap:
    """How one library names a DenseNet's tensors, as renames onto torchvision's names (archspec's)."""

    library: str
    """Who writes these names, for messages and for ``from-weights``' comments."""
    signature: re.Pattern[str] | None
    """A key that only this library writes; the first map with a matching key is the file's.
    ``None``: the names need no detection (torchvision's, the fallback)."""
    renames: tuple[tuple[re.Pattern[str], str], ...]
    """``(pattern, replacement)`` pairs for ``re.sub``, tried in order; the first match renames a key."""


TORCHVISION = KeyMap("torchvision", None, ())
# torchvision's names are archspec's; the other libraries differ only where listed here.
KEY_MAPS: tuple[KeyMap, ...] = (
    # MONAI's DenseNet wraps each layer's modules in `layers` and calls its output `class_layers.out`.
    KeyMap(
        "MONAI",
        re.compile(r"^features\.denseblock\d+\.denselayer\d+\.layers\.|^class_layers\.out\."),
        (
            (re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.layers\."), r"\1."),
            (re.compile(r"^class_layers\.out\."), "classifier."),
        ),
    ),
    KeyMap(
        "torchvision (before 0.4)",
        _LEGACY_DENSE_LAYER_KEY,
        ((_LEGACY_DENSE_LAYER_KEY, r"\1\2.\3"),),
    ),
    # timm keeps torchvision's names; its deep stems add `conv1`/`norm1`/`conv2`/`norm2`, which
    # archspec's `deep_stem` writes too. Detected only to say where a file comes from.
    KeyMap("timm", re.compile(r"^features\.conv1\.weight$"), ()),
)


@dataclass(frozen=True)
class Renamed:
    """A state dict under archspec's names, and what the file called each tensor."""

    key_map: KeyMap
    """The key map the file's keys selected (its ``library``: ``torchvision``, ``MONAI``, ``timm``…)."""
    state: dict[str, Tensor]
    """Tensors under archspec's (torchvision's) names."""
    file_names: dict[str, str]
    """Archspec's name → the file's, for every tensor (the same where nothing was renamed)."""
    clashes: list[str]
    """File keys that a rename would give a name another tensor already has; left out of ``state``."""


def detect_key_map(keys: Iterable[str]) -> KeyMap:
    """The key map of the first library whose signature one of ``keys`` matches; torchvision's if none."""
    keys = list(keys)
    for key_map in KEY_MAPS:
        if key_map.signature is not None and any(key_map.signature.search(key) for key in keys):
            return key_map
    return TORCHVISION


def _renamed(key: str, key_map: KeyMap) -> str:
    for pattern, replacement in key_map.renames:
        new, count = pattern.subn(replacement, key, count=1)
        if count:
            return new
    return key


def remap_keys(state: Mapping[str, Tensor]) -> Renamed:
    """Rename a state dict's keys to archspec's with the key map its keys select (see ``KEY_MAPS``)."""
    key_map = detect_key_map(state)
    renamed: dict[str, Tensor] = {}
    file_names: dict[str, str] = {}
    clashes = []
    for key, value in state.items():
        new = _renamed(key, key_map)
        if new in renamed:
            clashes.append(key)
            continue
        renamed[new] = value
        file_names[new] = key
    return Renamed(key_map, renamed, file_names, clashes)


def _sentence(text: str) -> str:
    """The first sentence of a loader's message, cut to one short line."""
    first = first_line(text).split(". ")[0].rstrip(".")
    return first if len(first) <= _MESSAGE_CHARS else first[: _MESSAGE_CHARS - 1] + "…"


def _reason(error: BaseException) -> str:
    """The loader's own message cut to what matters; torch's advice to drop weights_only is left out."""
    text = str(error)
    if _UNPICKLER_MARKER in text:
        return f"refused by torch.load(weights_only=True): {_sentence(text.split(_UNPICKLER_MARKER, 1)[1])}"
    if "PytorchStreamReader" in text:
        return f"truncated or corrupt archive ({_sentence(text.replace('PytorchStreamReader ', ''))})"
    return _sentence(text) or type(error).__name__


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``.pt``/``.pth`` file, on the CPU.

    Raises:
        SpecError: the path is not a readable file, the file is corrupt or holds
            anything but a mapping of names to tensors, or it would run code.
    """
    path = Path(path)
    file = str(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise SpecError(Problem(f"weights file {reason}", file=file))
    if path.stat().st_size == 0:
        raise SpecError(Problem("weights file is empty", file=file))
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pickle-protocol notices; a refusal is reported below
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for one cause: bad bytes
        raise SpecError(Problem(f"cannot load weights: {_reason(error)}", file=file)) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise SpecError(
            Problem(
                f"not a state dict (a mapping of names to tensors); found {type(state).__name__}",
                file=file,
            )
        )
    return dict(state)


def shown_key(key: str) -> str:
    """A key as a short printable piece of one line: a hostile file's keys may hold newlines or run long."""
    text = key if key.isprintable() else ascii(key)
    return text if len(text) <= _KEY_CHARS else text[: _KEY_CHARS - 1] + "…"


def _listed(one: str, many: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = f", … and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {one if len(items) == 1 else many}: {shown}{more}"


def _dims(shape: torch.Size) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _kind(value: Tensor) -> str:
    """What makes a tensor unloadable into a parameter (sparse, quantized, complex), or ``""``."""
    if value.is_nested:
        return "nested"
    if value.layout != torch.strided:
        return str(value.layout).removeprefix("torch.")
    if value.is_quantized:
        return "quantized"
    return "complex" if value.is_complex() else ""


def key_problems(expected: Mapping[str, tuple[int, ...]], renamed: Renamed, file: str | None = None) -> list[Problem]:
    """Keys of ``renamed`` that do not fit ``expected`` (names → shapes): missing, unexpected,
    clashing after renaming, or of another shape. Unexpected and mis-shaped keys are listed as
    the file names them; missing ones as the model does. ``num_batches_tracked`` may be missing:
    torch fills it in for old checkpoints."""
    state = renamed.state
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [shown_key(renamed.file_names[key]) for key in state if key not in expected]
    mismatched = [
        f"{shown_key(renamed.file_names[key])} (file {_dims(value.shape)}, model {_dims(expected[key])})"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key])
    ]
    return [
        Problem(_listed(one, many, items), file=file)
        for one, many, items in (
            ("missing key", "missing keys", missing),
            ("unexpected key", "unexpected keys", unexpected),
            ("key that repeats another after renaming", "keys that repeat others after renaming",
             [shown_key(key) for key in renamed.clashes]),
            ("shape mismatch", "shape mismatches", mismatched),
        )
        if items
    ]


def renaming_note(renamed: Renamed, file: str | None = None) -> list[Problem]:
    """The line that says whose names a refused file was read with, where it was renamed."""
    if not renamed.key_map.renames:
        return []
    return [Problem(f"keys read as {renamed.key_map.library}'s names and renamed to torchvision's", file=file)]


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor] | Renamed, file: str | None = None) -> None:
    """Refuse a state dict that does not fit ``model`` exactly, or that holds NaN/inf.

    Args:
        model: the network the tensors are for.
        state: the tensors under archspec's names, or a ``Renamed`` file (whose problems
            then name keys as the file does, and end with the library it was read as).
        file: the file named in every problem.

    Raises:
        SpecError: one problem per kind of mismatch (missing keys, unexpected keys,
            shape mismatches, sparse/quantized/complex tensors, non-finite values),
            each listing the first few and the count.
    """
    if not isinstance(state, Renamed):
        state = Renamed(TORCHVISION, dict(state), {key: key for key in state}, [])
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    tensors = state.state.items()
    unsupported = [
        f"{shown_key(state.file_names[key])} ({_kind(value)})" for key, value in tensors if _kind(value)
    ]
    non_finite = [
        shown_key(state.file_names[key])
        for key, value in tensors
        if not _kind(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    problems = key_problems(expected, state, file) + [
        Problem(_listed(one, many, items), file=file)
        for one, many, items in (
            ("tensor that is not a dense real tensor", "tensors that are not dense real tensors", unsupported),
            ("tensor with NaN or inf values", "tensors with NaN or inf values", non_finite),
        )
        if items
    ]
    if problems:
        raise SpecError([*problems, *renaming_note(state, file)])


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into ``model`` strictly, in place.

    Args:
        model: the built network (``archspec.build``).
        path: a ``.pt``/``.pth`` state dict (read with ``weights_only=True``) or a
            ``.safetensors`` file. Keys may be torchvision's (old ``norm.1`` style included),
            timm's or MONAI's: ``KEY_MAPS`` renames them, chosen by the keys the file holds.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        SpecError: the file cannot be read safely, or its keys, shapes or values do
            not fit the model; the problems list the first few of each and their counts.
    """
    renamed = remap_keys(read_state_dict(path))
    check_state_dict(model, renamed, file=str(path))
    try:
        model.load_state_dict(renamed.state, strict=True)
    except RuntimeError as error:  # keys and shapes fit, but a tensor cannot be copied (e.g. sparse)
        raise SpecError(Problem(f"cannot load weights: {_reason(error)}", file=str(path))) from None
    return model
