"""The inputs int8 calibration runs on: a user's ``.npy`` array, checked, then fed in batches.

archspec never calibrates on random data: the ranges of a quantized file are only as
good as the inputs they were measured on, so the user names them. Every problem with the
array is one line naming the file, found before any long work starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from archspec.errors import Problem, SpecError, first_line

_NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins (numpy's format.MAGIC_PREFIX)
CALIBRATION_BATCH = 8
"""Inputs per onnxruntime run while calibrating and comparing: bounds memory on large arrays,
and MinMax calibration keeps only each tensor's extremes, so the batch does not change the ranges."""


def _refuse(path: Path, message: str) -> SpecError:
    return SpecError(Problem(message, file=str(path)))


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def read_calibration(path: str | Path, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Load a calibration array and check it against the input the file takes.

    Args:
        path: a ``.npy`` file written by ``numpy.save``: shape ``(N, *sample_shape)``,
            floating point, every value finite; inputs exactly as the exported file
            takes them (normalised, or in [0, 1] when the preprocessing is baked in).
        sample_shape: one input's shape, as the spec declares it: ``(C, H, W)`` or ``(features,)``.

    Returns:
        The array as C-contiguous float32.

    Raises:
        SpecError: one line naming the file: unreadable, not a ``.npy`` array, a pickled or
            non-floating dtype, the wrong shape, no inputs, or NaN or infinite values.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            magic = file.read(len(_NPY_MAGIC))
    except OSError as error:
        reason = "it is a directory" if path.is_dir() else error.strerror or str(error)
        raise _refuse(path, f"cannot read the calibration array: {reason}") from None
    if magic.startswith(b"PK"):
        raise _refuse(path, "an .npz archive; give one array saved with numpy.save (.npy)")
    if magic != _NPY_MAGIC:
        raise _refuse(path, "not a .npy file (numpy.save writes one)")
    try:
        loaded = np.load(path, allow_pickle=False)  # pickles could run code: never loaded
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise _refuse(path, "dtype object (pickled Python objects); calibration inputs are floating point "
                                "(float32), as the file takes them") from None
        raise _refuse(path, f"not a readable .npy array: {first_line(error)}") from None
    except (OSError, EOFError) as error:  # truncated, or a header numpy cannot parse
        raise _refuse(path, f"not a readable .npy array: {first_line(error)}") from None
    expected = f"(N, {', '.join(map(str, sample_shape))})"
    if not np.issubdtype(loaded.dtype, np.floating):
        raise _refuse(path, f"dtype {loaded.dtype}; calibration inputs are floating point "
                            f"(float32), as the file takes them")
    if loaded.ndim != 1 + len(sample_shape) or tuple(loaded.shape[1:]) != tuple(sample_shape):
        raise _refuse(path, f"shape {tuple(loaded.shape)}; expected {expected}: N inputs of the spec's input shape")
    if loaded.shape[0] == 0:
        raise _refuse(path, f"shape {tuple(loaded.shape)} holds no inputs; expected {expected} with N ≥ 1")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        inputs = np.ascontiguousarray(loaded, dtype=np.float32)
    nan, infinite = np.isnan(inputs), np.isinf(inputs)
    if nan.any() or infinite.any():
        first = _first_index(nan | infinite)
        what = " and ".join(f"{count:,} {name}" for count, name in
                            ((int(nan.sum()), "NaN"), (int(infinite.sum()), "infinite")) if count)
        raise _refuse(path, f"{what} value{'s' if nan.sum() + infinite.sum() > 1 else ''} "
                            f"(first at index {first}); calibration inputs must be finite")
    return inputs


def batches(inputs: np.ndarray, size: int | None = None) -> Iterator[np.ndarray]:
    """Consecutive slices of ``CALIBRATION_BATCH`` inputs; with ``size`` (a static graph's batch),
    slices of exactly ``size``, the last one padded with copies of the last input.

    A copy changes no MinMax range; a caller comparing outputs keeps the first ``len(inputs)``.
    """
    step = size or CALIBRATION_BATCH
    for start in range(0, len(inputs), step):
        part = inputs[start:start + step]
        if size is not None and len(part) < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
        yield part


class ArrayReader(CalibrationDataReader):
    """Feeds a checked calibration array to onnxruntime's calibrator, a batch at a time."""

    def __init__(self, inputs: np.ndarray, input_name: str, batch: int | None = None):
        self._inputs = inputs
        self._input_name = input_name
        self._batch = batch
        self._batches = batches(inputs, batch)

    def get_next(self) -> dict[str, np.ndarray] | None:
        part = next(self._batches, None)
        return None if part is None else {self._input_name: part}

    def rewind(self) -> None:
        self._batches = batches(self._inputs, self._batch)
