"""Run an exported file in runtimes other than onnxruntime: OpenCV DNN, OpenVINO, onnx2torch.

Each adapter takes the file and one input array and returns the output array; the
runtime's package is imported inside it, so archspec needs none of them unless asked
(``pip install 'archspec[runtimes]'``). ``check_installed`` and ``check_runs`` run before an
export starts: a runtime that is missing, or that cannot run a part of the network, is refused
then, not after the export.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from archspec.errors import Problem, SpecError
from archspec.exporters.report import CaseResult, RuntimeCheck, Tolerance
from archspec.exporters.verify import Case, References, compare, one_array, with_references
from archspec.format.parts.vocabulary import norm_name, norms_in
from archspec.format.shapes import StaticPass

EXTRA = "pip install 'archspec[runtimes]'"


def _run_opencv(path: Path, x: np.ndarray) -> np.ndarray:
    """OpenCV DNN: reads the file into its own graph; every output, in the file's order."""
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    names = [output.name for output in onnx.load(str(path), load_external_data=False).graph.output]
    return one_array([np.asarray(value) for value in net.forward(names)])


def _run_openvino(path: Path, x: np.ndarray) -> np.ndarray:
    """OpenVINO CPU at f32: its CPU plugin picks bf16 by default where the CPU has it (3e-2 off)."""
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(x)
    return one_array([np.asarray(results[output]) for output in compiled.outputs])


def _run_onnx2torch(path: Path, x: np.ndarray) -> np.ndarray:
    """onnx2torch: the file converted back to a torch module; it lacks some newer op versions."""
    import onnx2torch

    module = onnx2torch.convert(str(path)).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return one_array([value.numpy() for value in (out if isinstance(out, (list, tuple)) else [out])])


@dataclass(frozen=True)
class Runtime:
    """A runtime's name, the package it imports, its adapter and what it is known not to run."""

    name: str
    package: str
    run: Callable[[Path, np.ndarray], np.ndarray]
    norms_on: Mapping[str, frozenset[int]] = field(default_factory=dict)
    """Norms it runs only on some inputs: norm name → the spatial dimensions it runs it on
    (0 feature vectors, 1 signals, 2 images, 3 volumes); a norm not named runs on every input."""
    measured: str = ""
    """Which version the limits were measured with, for the refusal's message."""


_INPUTS = {0: "feature vectors", 1: "1D input (signals)", 2: "images", 3: "3D input (volumes)"}

RUNTIMES: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        # OpenCV 5.1.0 runs both norms on images only. Group norm (a Reshape to (N, G, rest) around an
        # InstanceNormalization, which OpenCV fuses) fails in fastNormGroupBlockF32 (asserts 5-D) on
        # signals and volumes and in GroupNormLayer's shapes on feature vectors; instance norm fails in
        # InstanceNormLayerImpl::getMemoryShapes on signals and volumes (tests/test_runtime_limits.py).
        Runtime("opencv", "cv2", _run_opencv,
                norms_on={"group_norm": frozenset({2}), "instance_norm": frozenset({2})},
                measured="OpenCV 5.1 runs group and instance norms on images only"),
        Runtime("openvino", "openvino", _run_openvino),
        Runtime("onnx2torch", "onnx2torch", _run_onnx2torch),
    )
}


def check_installed(names: Sequence[str]) -> tuple[str, ...]:
    """Settle the runtimes to verify with before the export starts.

    Raises:
        SpecError: a name is not a runtime, or its package does not import.
    """
    for name in names:
        if name not in RUNTIMES:
            raise SpecError(Problem(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}",
                                    option="--verify-with"))
        # Looked up, not imported: no package is imported by a name that came from the user.
        if importlib.util.find_spec(RUNTIMES[name].package) is None:
            raise SpecError(Problem(f"runtime {name} is not installed ({RUNTIMES[name].package} is not found); "
                                    f"{EXTRA}", option="--verify-with"))
    return tuple(dict.fromkeys(names))


def check_runs(result: StaticPass, names: Sequence[str]) -> None:
    """Refuse a runtime that is known not to run a part of this network, before the export starts.

    Raises:
        SpecError: at the first such part's field (``body[0].norm``), naming the runtime; names
            that are not runtimes are left to ``check_installed``.
    """
    for name in dict.fromkeys(names):
        runtime = RUNTIMES.get(name)
        if runtime is None:
            continue
        refused = [(f"{stage.path}.{field_name}", norm_name(norm), dims)
                   for stage in result.stages
                   for field_name, norm in norms_in(stage.part)
                   if (dims := len(stage.in_shape) - 1) not in runtime.norms_on.get(norm_name(norm), (dims,))]
        if refused:
            path, norm, dims = refused[0]
            more = f" ({len(refused) - 1} more parts use it)" if len(refused) > 1 else ""
            raise SpecError(Problem(f"{name} cannot run {norm} on {_INPUTS[dims]}{more}: {runtime.measured}; "
                                    f"leave {name} out of --verify-with", path=path))


def verify_in(name: str, path: Path, module: nn.Module, cases: Sequence[Case], *,
              tolerance: Tolerance, references: References | None = None) -> RuntimeCheck:
    """Run the file at ``path`` in runtime ``name`` on the same seeded inputs as ``verify``
    (PyTorch's outputs taken from ``references`` where ``verify`` computed them)."""
    run = RUNTIMES[name].run
    module.eval()
    results: list[CaseResult] = []
    try:
        for case, x, expected in with_references(module, cases, {} if references is None else references):
            actual = run(path, np.ascontiguousarray(x.numpy()))
            results.append(compare(case.name, case.shape, actual, expected, tolerance))
    except Exception as error:  # each runtime raises its own types for files it cannot load or run
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return RuntimeCheck(name, tuple(results), error=f"{name} could not run the file: {lines[0]}")
    return RuntimeCheck(name, tuple(results))
