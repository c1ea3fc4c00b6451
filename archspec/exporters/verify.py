"""Run an ONNX file under onnxruntime and compare it with the PyTorch module it came from.

The provider is settled before the long export starts (``resolve_providers``), so
``--provider cuda`` without CUDA fails at once. onnxruntime logs only fatal
errors: a CUDA provider that cannot load is reported in the result instead.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from archspec.errors import Problem, SpecError
from archspec.exporters.report import CaseResult, Latency, Tolerance, VerifyReport

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


@functools.lru_cache(maxsize=None)
def runs_opset(opset: int) -> bool:
    """Whether this onnxruntime loads a file of ``opset``: it refuses opsets it calls unreleased."""
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [tensor],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    try:
        ort.InferenceSession(model.SerializeToString(), _session_options(), providers=[CPU])
    except Exception:  # onnxruntime's own error types; the caller says what it means
        return False
    return True


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
    timed: bool = False
    """Also measure onnxruntime's milliseconds per batch on this input."""


def _timed_run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
    """The session's outputs for ``feed``, and the run's wall time in seconds."""
    start = time.perf_counter()
    outputs = session.run(None, feed)
    return outputs, time.perf_counter() - start


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


def _reference(module: nn.Module, cases: Sequence[Case], size: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray]:
    """The input for every case at ``size`` and PyTorch's output: one forward pass at the largest batch.

    A smaller batch at the same size reads the first samples, and its expected output is the
    first rows: in eval mode a sample's output depends on that sample alone.
    """
    index, batch = max(((i, case.shape[0]) for i, case in enumerate(cases) if case.shape[1:] == size),
                       key=lambda item: item[1])
    x = torch.randn((batch, *size), generator=torch.Generator().manual_seed(_SEED + index))
    with torch.no_grad():
        out = module(x)
    return x, one_array([value.numpy() for value in (out.values() if isinstance(out, dict) else [out])])


def one_array(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """A network's outputs as one array: the output itself, or several (a backbone's maps, in
    the file's order) flattened per sample and joined, so one comparison covers them all."""
    if len(outputs) == 1:
        return outputs[0]
    return np.concatenate([output.reshape(output.shape[0], -1) for output in outputs], axis=1)


References = dict[tuple[int, ...], tuple[torch.Tensor, np.ndarray]]
"""PyTorch's side of the cases, by input size: the seeded input and the module's output."""


def with_references(module: nn.Module, cases: Sequence[Case],
                    references: References) -> Iterator[tuple[Case, torch.Tensor, np.ndarray]]:
    """Each case with its input and PyTorch's output, one forward pass per input size; what is
    computed stays in ``references``, so every runtime that checks the file reuses it."""
    for case in cases:
        size = case.shape[1:]
        if size not in references:
            references[size] = _reference(module, cases, size)
        x, expected = (values[: case.shape[0]] for values in references[size])
        yield case, x, expected


def verify(
    path: str | Path | bytes,
    module: nn.Module,
    cases: Sequence[Case],
    *,
    providers: Providers,
    tolerance: Tolerance,
    progress: Callable[[str], None] = lambda _: None,
    references: References | None = None,
) -> VerifyReport:
    """Run the file at ``path`` and ``module`` (eval mode) on seeded random inputs and compare.

    Args:
        path: the ONNX file (or its bytes), with one input and one output.
        module: the PyTorch network it was exported from.
        cases: the input shapes to try; one seeded input per size, at the largest batch there
            (smaller batches take its first samples); ``timed`` ones are also timed.
        providers: from ``resolve_providers``.
        tolerance: the elementwise bound every output must meet.
        progress: called with a short description before each step.
        references: PyTorch's outputs already computed for these cases; filled in as they are.

    Returns:
        The report: providers that actually ran, each case's errors, and the latency of timed cases.
    """
    progress("opening the file in onnxruntime")
    module.eval()
    results: list[CaseResult] = []
    latency: list[Latency] = []
    ran: tuple[str, ...] = ()
    try:
        model = path if isinstance(path, bytes) else str(path)
        session = ort.InferenceSession(model, _session_options(), providers=list(providers.order))
        ran = tuple(session.get_providers())
        input_name = session.get_inputs()[0].name
        for case, x, expected in with_references(module, cases, {} if references is None else references):
            progress(f"verifying {case.name} {case.shape}")
            feed = {input_name: x.numpy()}
            actual, seconds = _timed_run(session, feed)
            results.append(compare(case.name, case.shape, one_array(actual), expected, tolerance))
            if case.timed:
                # On the CPU the comparison run is the timing (a second run measured the same);
                # CUDA's first run at a shape also searches cuDNN's algorithms, so it runs again.
                if ran[0] == CUDA:
                    progress(f"timing {case.name} on {ran[0]}")
                    _, seconds = _timed_run(session, feed)
                latency.append(Latency(provider=ran[0], batch=case.shape[0], input_shape=case.shape,
                                       milliseconds=1000 * seconds))
    except Exception as error:  # onnxruntime raises its own types for files it cannot load or run
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return VerifyReport(providers.requested, ran, providers.cuda_unused_reason, tolerance,
                            tuple(results), error=f"onnxruntime could not run the file: {lines[0]}",
                            latency=tuple(latency))
    reason = providers.cuda_unused_reason if CUDA not in ran else None
    return VerifyReport(providers.requested, ran, reason, tolerance, tuple(results), latency=tuple(latency))

