"""What each deployment format is, and the refusals that come before any conversion.

Never imports torch or a converter: the checks here run before the network is built, and
the command lists the formats without loading any of them. A format's module (``module``)
holds ``write``, ``runner`` and ``not_runnable``; it is imported by that constant name only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType

from archspec.errors import Problem, SpecError

_INPUTS = {0: "feature vectors", 1: "1D input (signals)", 2: "images", 3: "3D input (volumes)"}


@dataclass(frozen=True)
class Format:
    """A deployment format: what it needs, what it can hold, how it is judged."""

    name: str
    """What ``--format`` takes: ``openvino``."""
    extra: str
    """The pip extra that installs its converter and runtime: ``pip install 'archspec[openvino]'``."""
    packages: tuple[str, ...]
    """Import names the converter and the runtime need (looked up, not imported, to refuse early)."""
    suffix: str
    """The file's usual suffix; a format of several files names the others in ``siblings``."""
    precisions: tuple[str, ...]
    spatial_dims: frozenset[int]
    """Inputs it can express, by spatial dimensions: 0 feature vectors, 1 signals, 2 images, 3 volumes."""
    dynamic_batch: bool
    """The batch stays free in the file (verified at batch 1 and a larger batch)."""
    dynamic_spatial: bool
    """The spatial sizes stay free too (verified again at a second, non-square size)."""
    runtime: str
    """What runs the file in the verification: ``OpenVINO CPU (f32)``."""
    tolerance: dict[str, float]
    """Largest ``|file − PyTorch|`` over the largest ``|PyTorch|`` output, by precision (docs/deployment.md)."""
    module: str
    siblings: tuple[str, ...] = ()
    """Suffixes of the files written beside the main one (OpenVINO's ``.bin``)."""
    cannot: str = ""
    """Why the inputs it refuses are refused (measured), for the refusal's message."""

    @property
    def install(self) -> str:
        return f"pip install 'archspec[{self.extra}]'"

    def implementation(self) -> ModuleType:
        """The module that writes and runs the format, imported on first use: it imports torch (and
        its converter lazily). A fixed table of archspec's own modules, never a name from input."""
        from archspec.exporters.formats import (
            coreml,
            executorch,
            litert,
            onnx_file,
            openvino_ir,
            tensorrt,
            torch_export,
        )

        modules = (coreml, executorch, litert, onnx_file, openvino_ir, tensorrt, torch_export)
        return {module.__name__: module for module in modules}[self.module]


_FP32 = 1e-4  # a runtime of its own reorders sums: DenseNet-121's logits stay within 2e-6 of the largest
_FP16 = 1e-2  # fp16 keeps 11 significant bits; the measured errors sit near 1e-3 (as ONNX fp16)

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format("onnx", "onnx", ("onnxruntime",), ".onnx", ("fp32", "fp16", "int8"), frozenset({0, 1, 2, 3}),
               True, True, "onnxruntime CPU", {"fp32": _FP32, "fp16": _FP16, "int8": 0.1},
               "archspec.exporters.formats.onnx_file"),
        Format("torch-export", "torch-export", ("torch",), ".pt2", ("fp32",), frozenset({0, 1, 2, 3}),
               True, True, "torch.export.load (PyTorch eager)", {"fp32": _FP32},
               "archspec.exporters.formats.torch_export"),
        Format("openvino", "openvino", ("openvino",), ".xml", ("fp32", "fp16"), frozenset({0, 1, 2, 3}),
               True, True, "OpenVINO CPU (f32 inference)", {"fp32": _FP32, "fp16": _FP16},
               "archspec.exporters.formats.openvino_ir", siblings=(".bin",)),
        Format("executorch", "executorch", ("executorch",), ".pte", ("fp32",), frozenset({0, 1, 2}),
               True, False, "ExecuTorch runtime (XNNPACK delegate)", {"fp32": _FP32},
               "archspec.exporters.formats.executorch",
               cannot="ExecuTorch 1.5's runtime fails to load a lowered 3D network (error 0x14, measured on "
                      "MONAI's DenseNet-121 and a 3D FC-DenseNet)"),
        Format("litert", "litert", ("litert_torch", "ai_edge_litert"), ".tflite", ("fp32",),
               frozenset({0, 1, 2}), False, False, "LiteRT interpreter", {"fp32": _FP32},
               "archspec.exporters.formats.litert",
               cannot="litert-torch 0.10's converter aborts the whole process on a 3D network (measured)"),
        Format("coreml", "coreml", ("coremltools",), ".mlpackage.zip", ("fp32", "fp16"), frozenset({0, 1, 2, 3}),
               False, False, "Core ML (macOS only)", {"fp32": _FP32, "fp16": _FP16},
               "archspec.exporters.formats.coreml"),
        Format("tensorrt", "tensorrt", ("tensorrt",), ".engine", ("fp32", "fp16"), frozenset({0, 1, 2, 3}),
               True, False, "TensorRT (NVIDIA GPU)", {"fp32": 1e-3, "fp16": _FP16},
               "archspec.exporters.formats.tensorrt"),
    )
}
"""Every format, ONNX first (the default). ``onnx``'s own export is ``archspec.export_onnx``."""

FORMAT_NAMES = tuple(FORMATS)


def get(name: str) -> Format:
    """The format called ``name``.

    Raises:
        SpecError: one line naming the formats.
    """
    if name not in FORMATS:
        raise SpecError(Problem(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}", option="--format"))
    return FORMATS[name]


def check_precision(fmt: Format, precision: str) -> None:
    """Refuse a precision the format does not have, in one line."""
    if precision not in fmt.precisions:
        raise SpecError(Problem(f"{fmt.name} files are written in {', '.join(fmt.precisions)}, not {precision}",
                                option="--precision"))


def check_expresses(fmt: Format, spatial: int) -> None:
    """Refuse an input the format cannot express, at the spec's ``input``, before converting.

    Raises:
        SpecError: path ``input``; the caller places it in the spec file (``located_in``).
    """
    if spatial not in fmt.spatial_dims:
        why = f": {fmt.cannot}" if fmt.cannot else ""
        raise SpecError(Problem(f"{fmt.name} cannot express {_INPUTS.get(spatial, f'{spatial}D input')}{why}; "
                                f"choose another format", path="input"))


def missing_package(fmt: Format) -> str | None:
    """The first of the format's packages that is not installed, or ``None``."""
    return next((package for package in fmt.packages if importlib.util.find_spec(package) is None), None)


def check_installed(fmt: Format) -> None:
    """Refuse a format whose converter or runtime is not installed, naming its extra."""
    missing = missing_package(fmt)
    if missing is not None:
        raise SpecError(Problem(f"{fmt.name} needs {missing}, which is not installed: {fmt.install}",
                                option="--format"))
