"""Run an ONNX file under onnxruntime and compare it with the PyTorch module it came from.

The provider is settled before the long export starts (``resolve_providers``), so
``--provider cuda`` without CUDA fails at once. onnxruntime logs only fatal
errors: a CUDA provider that cannot load is reported in the result instead.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from archspec.errors import Problem, SpecError
from archspec.exporters.report import CaseResult, Tolerance, VerifyReport

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cuda", "cpu")
_QUIET = 4  # onnxruntime severity: fatal only; provider-load errors are reported by us
_SEED = 0
# TF32 would trade fp32 accuracy for speed; verification checks fp32 semantics.
_CUDA_OPTIONS = {"use_tf32": "0"}


@dataclass(frozen=True)
class Providers:
    """The provider list to ask onnxruntime for, and why CUDA is not in it when it is not."""

    requested: str
    order: tuple[str | tuple[str, dict[str, str]], ...]
    cuda_unused_reason: str | None


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only for the session; warnings are noise here
    return options


def _probe_cuda() -> str | None:
    """Open a one-node model on CUDA; return why that failed, or ``None`` if CUDA ran."""
    available = ort.get_available_providers()
    if CUDA not in available:
        return f"this onnxruntime build has no {CUDA} (available: {', '.join(available)})"
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its own warnings
            try:
                ort.preload_dlls()
            except Exception:  # missing CUDA libraries show up as a CPU-only session below
                pass
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [tensor],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), _session_options(), providers=[(CUDA, _CUDA_OPTIONS), CPU]
        )
    except Exception as error:
        return f"{CUDA} failed to start: {str(error).strip().splitlines()[0]}"
    if CUDA not in session.get_providers():
        return f"{CUDA} is installed but could not start (no GPU, or CUDA/cuDNN libraries missing)"
    return None


def resolve_providers(requested: str) -> Providers:
    """Settle which providers verification asks for.

    Raises:
        SpecError: ``cuda`` was requested and CUDA cannot run, or ``requested`` is unknown.
    """
    ort.set_default_logger_severity(_QUIET)
    if requested == "cpu":
        return Providers(requested, (CPU,), "CPU provider requested")
    if requested not in PROVIDER_CHOICES:
        raise SpecError(Problem(f"unknown provider {requested!r}; choose one of {', '.join(PROVIDER_CHOICES)}"))
    reason = _probe_cuda()
    if requested == "cuda":
        if reason is not None:
            raise SpecError(Problem(f"--provider cuda: {reason}"))
        return Providers(requested, ((CUDA, _CUDA_OPTIONS),), None)
    if reason is None:
        return Providers(requested, ((CUDA, _CUDA_OPTIONS), CPU), None)
    return Providers(requested, (CPU,), reason)


@dataclass(frozen=True)
class Case:
    """One verification input shape and its name."""

    name: str
    shape: tuple[int, ...]


def compare(name: str, shape: tuple[int, ...], actual: np.ndarray, expected: np.ndarray,
            tolerance: Tolerance) -> CaseResult:
    """Errors of ``actual`` against ``expected`` under ``tolerance``.

    The shapes must be equal: numpy would broadcast a ``(10,)`` output against a
    ``(2, 10)`` one and find them close. NaN or an infinity in either output breaks the
    tolerance, even where both hold the same one: such a network computes nothing useful.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return CaseResult(name=name, input_shape=shape, output_shape=actual.shape, expected_shape=expected.shape,
                          max_abs_error=None, max_rel_error=None, outside_tolerance=expected.size,
                          non_finite=0, elements=expected.size)
    finite = np.isfinite(actual) & np.isfinite(expected)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, and outside tolerance below
        difference = np.abs(actual - expected)
        magnitude = np.abs(expected)
        within = finite & (difference <= tolerance.atol + tolerance.rtol * magnitude)
        relative = difference / np.maximum(magnitude, np.finfo(np.float32).tiny)
    measured = finite.any()
    return CaseResult(
        name=name,
        input_shape=shape,
        output_shape=actual.shape,
        expected_shape=expected.shape,
        max_abs_error=float(np.max(difference[finite])) if measured else None,
        max_rel_error=float(np.max(relative[finite])) if measured else None,
        outside_tolerance=int(np.sum(~within)),
        non_finite=int(np.sum(~finite)),
        elements=int(expected.size),
    )


def verify(
    path: str | Path,
    module: nn.Module,
    cases: Sequence[Case],
    *,
    providers: Providers,
    tolerance: Tolerance,
    progress: Callable[[str], None] = lambda _: None,
) -> VerifyReport:
    """Run the file at ``path`` and ``module`` (eval mode) on seeded random inputs and compare.

    Args:
        path: the ONNX file, with one input and one output.
        module: the PyTorch network it was exported from.
        cases: the input shapes to try, each with its own seed.
        providers: from ``resolve_providers``.
        tolerance: the elementwise bound every output must meet.
        progress: called with a short description before each step.

    Returns:
        The report: providers that actually ran and each case's errors.
    """
    progress("opening the file in onnxruntime")
    module.eval()
    results: list[CaseResult] = []
    ran: tuple[str, ...] = ()
    try:
        session = ort.InferenceSession(str(path), _session_options(), providers=list(providers.order))
        ran = tuple(session.get_providers())
        input_name = session.get_inputs()[0].name
        for index, case in enumerate(cases):
            progress(f"verifying {case.name} {case.shape}")
            generator = torch.Generator().manual_seed(_SEED + index)
            x = torch.randn(case.shape, generator=generator)
            with torch.no_grad():
                expected = module(x).numpy()
            (actual,) = session.run(None, {input_name: x.numpy()})
            results.append(compare(case.name, case.shape, actual, expected, tolerance))
    except Exception as error:  # onnxruntime raises its own types for files it cannot load or run
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return VerifyReport(providers.requested, ran, providers.cuda_unused_reason, tolerance,
                            tuple(results), error=f"onnxruntime could not run the file: {lines[0]}")
    reason = providers.cuda_unused_reason if CUDA not in ran else None
    return VerifyReport(providers.requested, ran, reason, tolerance, tuple(results))

