"""Weights from a local file into a built network: safe reading, key remaps, strict checks.

A weights file is untrusted input. ``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)``, which refuses pickles that would run code;
``.safetensors`` files hold no code at all. Every failure is a ``SpecError``
naming the file, with a short diff when the keys or shapes do not fit.

torchvision's names are archspec's; MONAI's and torchvision's pre-0.4 names are
renamed by one key map per library (``KEY_MAPS``), the one the file's keys select.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from archspec.errors import Problem, SpecError, first_line
from archspec.format.paths import file_kind
from archspec.network import OUTPUT_LAYERS

logger = logging.getLogger(__name__)

_SHOWN = 5  # keys listed per kind of mismatch; the rest are counted
_MESSAGE_CHARS = 200  # a loader's own message is cut to one short line
_KEY_CHARS = 120  # a key is cut to this in messages (torchvision's longest is 55)
_UNPICKLER_MARKER = "WeightsUnpickler error:"  # torch's detail follows this in its long message
# What a weights file may make archspec read. DenseNet-121's data.pkl is 120,995 bytes for 727
# tensors (166 a key) and its safetensors header about 100 a key: 1 KiB a key is 6× that.
_METADATA_BASE = 64 * 1024
_METADATA_PER_KEY = 1024
_HEADERS_METADATA = 8 * 1024 * 1024  # from-weights has no model to size by: 69× DenseNet-121's pickle
_MAX_DIMS = 16  # a DenseNet's tensors have at most 5 axes (a 3D convolution's weight)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
# torch.save before 1.6: a pickled magic number (0x1950a86a20f9469cfc6c) first, then the pickles.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
# Parameters and buffers take these; float8 has no NaN check worth the name and no CPU kernels to speak of.
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOATING_NAMES = "float16, bfloat16, float32 or float64"

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
    renames: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]
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
    # segmentation-models-pytorch's U-Net: torchvision's DenseNet as `encoder`, decoder blocks
    # counted from 0 (archspec's `decoderblock` from 1), the head's convolution as `segmentation_head.0`.
    KeyMap(
        "segmentation-models-pytorch",
        re.compile(r"^encoder\.features\.|^decoder\.blocks\.\d+\.|^segmentation_head\.0\."),
        (
            (re.compile(r"^encoder\.features\."), "features."),
            (re.compile(r"^decoder\.blocks\.(\d+)\."), lambda match: f"features.decoderblock{int(match[1]) + 1}."),
            (re.compile(r"^segmentation_head\.0\."), "classifier."),
        ),
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


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file, refused by its kind before it is opened:
    a FIFO would block and ``/dev/zero`` never ends."""
    file = str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SpecError(Problem("weights file does not exist", file=file)) from None
    except OSError as error:
        raise SpecError(Problem(f"cannot read weights file: {error.strerror or error}", file=file)) from None
    if not stat.S_ISREG(mode):
        kind = file_kind(mode)
        message = "weights file is a directory" if stat.S_ISDIR(mode) else \
            f"cannot read weights file: {kind}, not a regular file"
        raise SpecError(Problem(message, file=file))
    try:
        # O_NONBLOCK: should the path turn into a FIFO after the check, opening it does not wait
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise SpecError(Problem(f"cannot read weights file: {error.strerror or error}", file=file)) from None
    opened = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        opened.close()
        raise SpecError(Problem("weights file is not a regular file", file=file))
    return opened


@dataclass(frozen=True)
class _Budget:
    """How many bytes a weights file may make archspec read, decided before it reads any."""

    metadata: int
    """Bytes of the pickle (``data.pkl``) or JSON header that describes the tensors."""
    data: int | None
    """Bytes of tensor data the file may hold; ``None``: only headers are read, so any amount."""


def _budget(expected: Mapping[str, Tensor] | None) -> _Budget:
    """The model's own size bounds what its weights file may hold: every expected tensor at float64
    (8 bytes an element, the widest dtype accepted), and a header of ``_METADATA_PER_KEY`` a key."""
    if expected is None:
        return _Budget(_HEADERS_METADATA, None)
    metadata = _METADATA_BASE + _METADATA_PER_KEY * len(expected)
    return _Budget(metadata, 8 * sum(value.numel() for value in expected.values()) + metadata)


def _what_else(head: bytes) -> str:
    """A guess at what a file that is no checkpoint holds, for the message; ``""`` if none."""
    guesses = ((b"\x93NUMPY", "a NumPy .npy array"), (b"\x1f\x8b", "gzip-compressed data"),
               (b"PK\x03\x04", "a zip archive"), (b"\x89HDF", "an HDF5 file (Keras)"), (b"\x80", "a plain pickle, not torch.save's format"))
    found = next((name for magic, name in guesses if head.startswith(magic)), "")
    if not found and head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        found = "text"
    return f" (it looks like {found})" if found else ""


def _check_zip(opened: BinaryIO, size: int, budget: _Budget) -> None:
    """Refuse a torch zip checkpoint by its directory: compressed, duplicated or oversized entries."""
    try:
        entries = zipfile.ZipFile(opened).infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _unreadable("truncated or corrupt checkpoint: the zip directory at the end of the file is "
                          "missing or damaged (was it cut short?)") from None
    names = [entry.filename for entry in entries]
    pickles = [entry for entry in entries if entry.filename.endswith("/data.pkl") or entry.filename == "data.pkl"]
    if len(set(names)) != len(names) or len(pickles) != 1:
        raise _unreadable("not a PyTorch checkpoint: a zip archive without exactly one data.pkl and unique names")
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise _unreadable(f"compressed zip entry {shown_key(entry.filename)}: torch.save stores entries "
                              "uncompressed, and a compressed one could expand without bound")
        if entry.header_offset + entry.file_size > size:
            raise _unreadable(f"truncated zip checkpoint: entry {shown_key(entry.filename)} ends past the "
                              f"file's {size:,} bytes")
    if pickles[0].file_size > budget.metadata:
        raise _unreadable(f"its pickle (data.pkl) is {pickles[0].file_size:,} bytes; at most "
                          f"{budget.metadata:,} describe {_for_whom(budget)}")
    data = sum(entry.file_size for entry in entries) - pickles[0].file_size
    if budget.data is not None and data > budget.data:
        raise _unreadable(f"holds {data:,} bytes of data; the model's tensors need at most {budget.data:,} "
                          "(every tensor as float64)")


def _for_whom(budget: _Budget) -> str:
    return "any DenseNet's tensors" if budget.data is None else "this model's tensors"


class _Unreadable(Exception):
    """A weights file refused by its bytes before torch or safetensors reads it; the message is the problem."""


def _unreadable(message: str) -> _Unreadable:
    return _Unreadable(message)


_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                       "F64": torch.float64, "I64": torch.int64}


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise _unreadable(f"safetensors header names {shown_key(repeated)} twice")
    return dict(pairs)


def _safetensors(opened: BinaryIO, size: int, budget: _Budget) -> dict[str, Tensor]:
    """The tensors of a safetensors file, from a header parsed here (8-byte length, then JSON) and
    checked entry by entry; each tensor is a view of the file mapped into memory, so no byte of data
    is read until it is used."""
    opened.seek(0)
    length = int.from_bytes(opened.read(8), "little")
    if length > budget.metadata:
        raise _unreadable(f"its safetensors header claims {length:,} bytes; at most {budget.metadata:,} "
                          f"describe {_for_whom(budget)}")
    if 8 + length > size:
        raise _unreadable(f"truncated safetensors file: its header claims {length:,} bytes, "
                          f"the file has {size - 8:,} after the length")
    try:
        header = json.loads(opened.read(length), object_pairs_hook=_refuse_duplicates)
    except (ValueError, RecursionError) as error:
        raise _unreadable(f"corrupt safetensors header: {_sentence(str(error))}") from None
    if not isinstance(header, dict):
        raise _unreadable("corrupt safetensors header: not a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - length
    mapped = mmap.mmap(opened.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    tensors: dict[str, Tensor] = {}
    refused: dict[str, list[str]] = {}
    for name, entry in header.items():
        shape, dtype, offsets = (entry.get(field) for field in ("shape", "dtype", "data_offsets")) \
            if isinstance(entry, dict) else (None, None, None)
        if not (_int_list(shape, 2**62) and isinstance(dtype, str) and _int_list(offsets, size)
                and len(offsets) == 2 and len(shape) <= _MAX_DIMS):
            raise _unreadable(f"corrupt safetensors header: entry {shown_key(name)} needs a shape, "
                              "a dtype and two data offsets within the file")
        if dtype not in _SAFETENSORS_DTYPES:
            refused.setdefault(shown_key(dtype[:16]), []).append(shown_key(name))
            continue
        begin, end = offsets
        numel = math.prod(shape)
        itemsize = _SAFETENSORS_DTYPES[dtype].itemsize
        if not begin <= end <= data_size or end - begin != numel * itemsize:
            raise _unreadable(f"{'truncated' if end > data_size else 'corrupt'} safetensors file: {shown_key(name)}'s "
                              f"data, bytes {begin:,} to {end:,}, does not hold its shape "
                              f"({', '.join(map(str, shape))}) of {dtype} within the {data_size:,} bytes of data")
        dtype_ = _SAFETENSORS_DTYPES[dtype]
        if numel == 0 or mapped is None:
            tensors[name] = torch.empty(shape, dtype=dtype_)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a read-only mapping: the tensors are only ever read
                tensors[name] = torch.frombuffer(mapped, dtype=dtype_, count=numel,
                                                 offset=8 + length + begin).view(shape)
    if refused:
        kinds = "; ".join(f"{kind}: {', '.join(names[:_SHOWN])}" for kind, names in refused.items())
        raise _unreadable(f"tensors of a dtype archspec does not load ({kinds}); parameters take "
                          f"{_FLOATING_NAMES}")
    return tensors


def _int_list(value: object, limit: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= limit for item in value
    )


def _torch_load(path: Path, opened: BinaryIO, size: int, head: bytes, budget: _Budget) -> object:
    """``torch.load(weights_only=True)`` within the budget: a zip checkpoint's storages are mapped, not
    read; a legacy (pre-1.6) file is read whole only if it is no larger than the model's tensors need,
    and not at all for headers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickle-protocol and non-writable-buffer notices
        if head.startswith(_ZIP_MAGIC):
            _check_zip(opened, size, budget)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        opened.seek(0)
        if budget.data is None:
            with torch.serialization.skip_data():  # storages are allocated, never filled: headers only
                return torch.load(opened, map_location="cpu", weights_only=True)
        if size > budget.data:
            raise _unreadable(f"a legacy (before PyTorch 1.6) checkpoint of {size:,} bytes, read whole; the "
                              f"model's tensors need at most {budget.data:,}. Re-save it with a current torch.save")
        return torch.load(opened, map_location="cpu", weights_only=True)


def _read(path: str | Path, budget: _Budget) -> dict[str, Tensor]:
    """A weights file's tensors, by the file's names, none of their data read yet (mapped or skipped)."""
    path = Path(path)
    file = str(path)
    with _open_regular(path) as opened:
        size = os.fstat(opened.fileno()).st_size
        if size == 0:
            raise SpecError(Problem("weights file is empty", file=file))
        head = opened.read(16)
        try:
            if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_MAGIC):
                state = _torch_load(path, opened, size, head, budget)
            elif len(head) > 8 and head[8:9] == b"{":
                state = _safetensors(opened, size, budget)
            else:
                raise _unreadable("not a weights file: a PyTorch checkpoint (torch.save) or a safetensors "
                                  f"file was expected{_what_else(head)}")
        except _Unreadable as refusal:
            raise SpecError(Problem(str(refusal), file=file)) from None
        except SpecError:
            raise
        except Exception as error:  # torch raises many types for one cause: bad bytes
            raise SpecError(Problem(f"cannot load weights: {_reason(error)}", file=file)) from None
    if not _is_state_dict(state):
        raise SpecError(Problem(_not_a_state_dict(state), file=file))
    return dict(state)


def _is_state_dict(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and isinstance(tensor, Tensor) for key, tensor in value.items()
    )


def _not_a_state_dict(value: object) -> str:
    """Why a loaded object is not a state dict; for a training checkpoint, where its weights are."""
    if isinstance(value, Mapping):
        inner = [key for key, item in value.items()
                 if isinstance(key, str) and _is_state_dict(item) and len(item)]
        if inner:
            key = max(inner, key=lambda name: len(value[name]))
            tensors = value[key]
            prefixes = {name.split(".", 1)[0] for name in tensors}
            prefix = next(iter(prefixes)) if len(prefixes) == 1 and all("." in name for name in tensors) else ""
            strip = f", with the prefix {shown_key(prefix + '.')} cut from its keys" if prefix != "features" \
                and prefix else ""
            return (f"a training checkpoint, not a state dict: its {len(tensors):,} tensors are under the key "
                    f"{shown_key(repr(key))}; save that mapping alone with torch.save{strip}, and pass that file")
    return f"not a state dict (a mapping of names to tensors); found {type(value).__name__}"


def read_headers(path: str | Path) -> dict[str, Tensor]:
    """A weights file's tensor names, shapes and dtypes, as tensors on the meta device: no data is read.

    Raises:
        SpecError: the path is not a regular file, or the file is not a checkpoint, is
            truncated, would run code, or holds tensors that no DenseNet could take.
    """
    state = _read(path, _budget(None))
    problems = _header_problems(state, {key: key for key in state}, None, str(path))
    if problems:
        raise SpecError(problems)
    return {key: torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
            for key, value in state.items()}


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
    mismatched_keys = [key for key, value in state.items()
                       if key in expected and tuple(value.shape) != tuple(expected[key])]
    mismatched = [f"{shown_key(renamed.file_names[key])} (file {_dims(state[key].shape)}, model {_dims(expected[key])})"
                  for key in mismatched_keys]
    if mismatched_keys and all(_in_head(key) for key in mismatched_keys):
        mismatched[-1] += "; to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)"
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


def _dense(value: Tensor) -> bool:
    """Whether a tensor's strides lay its elements out once each, in some order (a channels-last
    weight passes); a zero stride (``expand``) or overlap would repeat a few stored bytes many times."""
    expected = 1
    for step, size in sorted((step, size) for step, size in zip(value.stride(), value.shape) if size != 1):
        if step != expected:
            return False
        expected *= size
    return True


def _dtype_fits(key: str, dtype: torch.dtype, model: torch.dtype | None) -> bool:
    """A floating tensor for a floating one (the copy converts); otherwise (``num_batches_tracked``)
    the model's own dtype. Without a model: floating, or int64 for ``num_batches_tracked``."""
    if model is None:
        return dtype in _FLOATING or (key.endswith("num_batches_tracked") and dtype == torch.int64)
    return dtype in _FLOATING if model.is_floating_point else dtype == model


def _header_problems(state: Mapping[str, Tensor], file_names: Mapping[str, str],
                     expected: Mapping[str, Tensor] | None, file: str | None) -> list[Problem]:
    """Tensors refused by their headers alone (kind, device, dtype, strides), before any data is read.
    With ``expected``, only its keys are judged: others are reported as unexpected."""
    found: dict[tuple[str, str], list[str]] = {}
    for key, value in state.items():
        if expected is not None and key not in expected:
            continue
        name = shown_key(file_names[key])
        kind = _kind(value)
        if kind:
            problem = ("tensor that is not a dense real tensor", "tensors that are not dense real tensors")
            detail = kind
        elif value.is_meta:
            problem = ("tensor saved without values (meta device)", "tensors saved without values (meta device)")
            detail = ""
        elif not _dtype_fits(key, value.dtype, None if expected is None else expected[key].dtype):
            problem = (f"tensor of a dtype the model cannot take ({_FLOATING_NAMES} expected)",
                       f"tensors of a dtype the model cannot take ({_FLOATING_NAMES} expected)")
            detail = str(value.dtype).removeprefix("torch.")
        elif not _dense(value):
            problem = ("tensor stored as a view that repeats its values (zero or overlapping strides)",
                       "tensors stored as views that repeat their values (zero or overlapping strides)")
            detail = f"strides {_dims(value.stride())}"
        else:
            continue
        found.setdefault(problem, []).append(f"{name} ({detail})" if detail else name)
    return [Problem(_listed(one, many, items), file=file) for (one, many), items in found.items()]


def check_state_dict(model_state: Mapping[str, Tensor], state: Mapping[str, Tensor] | Renamed,
                     file: str | None = None) -> None:
    """Refuse a state dict that does not fit ``model`` exactly, or that holds NaN/inf.

    Keys, shapes, dtypes and strides are judged first, from the tensors' headers; only if
    all fit are the values read, and only those of the keys the model expects.

    Args:
        model_state: the tensors the network expects (its state dict, less any it skips).
        state: the tensors under archspec's names, or a ``Renamed`` file (whose problems
            then name keys as the file does, and end with the library it was read as).
        file: the file named in every problem.

    Raises:
        SpecError: one problem per kind of mismatch (missing keys, unexpected keys,
            shape mismatches, sparse/quantized/complex, meta, non-floating or expanded
            tensors, non-finite values), each listing the first few and the count.
    """
    if not isinstance(state, Renamed):
        state = Renamed(TORCHVISION, dict(state), {key: key for key in state}, [])
    expected = {key: tuple(value.shape) for key, value in model_state.items()}
    problems = key_problems(expected, state, file)
    problems += _header_problems(state.state, state.file_names, model_state, file)
    if not problems:  # every tensor now is one the model expects, of its shape: reading it is bounded
        non_finite = [shown_key(state.file_names[key]) for key, value in state.state.items()
                      if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if non_finite:
            problems = [Problem(_listed("tensor with NaN or inf values", "tensors with NaN or inf values",
                                        non_finite), file=file)]
    if problems:
        raise SpecError([*problems, *renaming_note(state, file)])


def load_weights(model: nn.Module, path: str | Path, *, skip_head: bool = False) -> nn.Module:
    """Load a local weights file into ``model`` strictly, in place.

    Args:
        model: the built network (``archspec.build``).
        path: a ``.pt``/``.pth`` state dict (read with ``weights_only=True``) or a
            ``.safetensors`` file. Keys may be torchvision's (old ``norm.1`` style included),
            timm's or MONAI's: ``KEY_MAPS`` renames them, chosen by the keys the file holds.
        skip_head: fine-tuning: leave the output layer (``classifier`` or ``regressor``) as
            it is and ignore the file's; everything else loads strictly. The keys skipped
            are logged and kept in ``model.skipped_keys``.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        SpecError: the file cannot be read safely, or its keys, shapes or values do
            not fit the model; the problems list the first few of each and their counts.
    """
    kept = {key: value for key, value in model.state_dict().items() if not (skip_head and _in_head(key))}
    renamed = remap_keys(_read(path, _budget(kept)))
    skipped = [renamed.file_names[key] for key in renamed.state if skip_head and _in_head(key)]
    if skip_head:
        renamed = Renamed(renamed.key_map, {key: value for key, value in renamed.state.items() if not _in_head(key)},
                          renamed.file_names, renamed.clashes)
    check_state_dict(kept, renamed, file=str(path))
    try:
        model.load_state_dict(renamed.state, strict=not skip_head)
    except RuntimeError as error:  # keys and shapes fit, but a tensor cannot be copied (e.g. sparse)
        raise SpecError(Problem(f"cannot load weights: {_reason(error)}", file=str(path))) from None
    if skip_head:
        logger.info("skipped the output layer's keys of %s: %s", path, ", ".join(skipped) or "none")
        model.skipped_keys = tuple(skipped)
    return model


def _in_head(key: str) -> bool:
    """Whether ``key`` belongs to the output layer that fine-tuning replaces."""
    return key.split(".", 1)[0] in OUTPUT_LAYERS
