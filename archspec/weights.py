"""Weights from a local file into a built network: safe reading, key remaps, strict checks.

A weights file is untrusted input. ``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)``, which refuses pickles that would run code;
``.safetensors`` files hold no code at all. Every failure is a ``SpecError``
naming the file, with a short diff when the keys or shapes do not fit.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from archspec.errors import Problem, SpecError, first_line

_SHOWN = 5  # keys listed per kind of mismatch; the rest are counted
_MESSAGE_CHARS = 200  # a loader's own message is cut to one short line
_UNPICKLER_MARKER = "WeightsUnpickler error:"  # torch's detail follows this in its long message

# Checkpoints written before torchvision renamed `norm.1` to `norm1` (its `_load_state_dict`).
_LEGACY_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var)$"
)


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


def remap_legacy_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's old dense-layer keys (``denselayer1.norm.1.weight`` → ``denselayer1.norm1.weight``)."""
    return {_LEGACY_DENSE_LAYER_KEY.sub(r"\1\2.\3", key): value for key, value in state.items()}


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


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], file: str | None = None) -> None:
    """Refuse a state dict that does not fit ``model`` exactly, or that holds NaN/inf.

    ``num_batches_tracked`` may be missing: torch fills it in for old checkpoints.

    Raises:
        SpecError: one problem per kind of mismatch (missing keys, unexpected keys,
            shape mismatches, sparse/quantized/complex tensors, non-finite values),
            each listing the first few and the count.
    """
    expected = model.state_dict()
    missing = [
        key for key in expected if key not in state and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} (file {_dims(value.shape)}, model {_dims(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    unsupported = [f"{key} ({_kind(value)})" for key, value in state.items() if _kind(value)]
    non_finite = [
        key
        for key, value in state.items()
        if not _kind(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    problems = [
        Problem(_listed(one, many, items), file=file)
        for one, many, items in (
            ("missing key", "missing keys", missing),
            ("unexpected key", "unexpected keys", unexpected),
            ("shape mismatch", "shape mismatches", mismatched),
            ("tensor that is not a dense real tensor", "tensors that are not dense real tensors", unsupported),
            ("tensor with NaN or inf values", "tensors with NaN or inf values", non_finite),
        )
        if items
    ]
    if problems:
        raise SpecError(problems)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into ``model`` strictly, in place.

    Args:
        model: the built network (``archspec.build``).
        path: a ``.pt``/``.pth`` state dict (read with ``weights_only=True``) or a
            ``.safetensors`` file. torchvision DenseNet checkpoints load, old key style included.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        SpecError: the file cannot be read safely, or its keys, shapes or values do
            not fit the model; the problems list the first few of each and their counts.
    """
    state = remap_legacy_keys(read_state_dict(path))
    check_state_dict(model, state, file=str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # keys and shapes fit, but a tensor cannot be copied (e.g. sparse)
        raise SpecError(Problem(f"cannot load weights: {_reason(error)}", file=str(path))) from None
    return model
