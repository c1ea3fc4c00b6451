"""Run a written file in its own runtime and compare it with the PyTorch module, output by output.

The cases are ONNX's (``verification_cases``: batch 1, a larger batch, a second non-square
spatial size), less the ones a format's fixed shapes cannot take; the inputs are seeded the
same way. A module may return one tensor or a dict of named tensors: both sides are flattened
in the module's order and each output is compared relative to its own largest value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.registry import Format
from archspec.exporters.formats.report import FormatCase, FormatCheck, FormatTiming
from archspec.exporters.onnx import verification_cases
from archspec.exporters.verify import Case
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass

Runner = Callable[[np.ndarray], list[np.ndarray]]
"""A loaded file: one input array in, its outputs out, in the module's order."""

_SEED = 0  # case i draws from seed _SEED + i, as the ONNX verification does


def cases_for(fmt: Format, spec: Spec, result: StaticPass, batch_size: int) -> tuple[Case, ...]:
    """The ONNX cases the format's file can take: all when its shapes are dynamic; batch 1 and the
    larger batch when only the batch is; the one fixed shape (``batch_size``) otherwise."""
    if not fmt.dynamic_batch:
        return (Case(f"batch {batch_size}", (batch_size, *result.input_shape), timed=True),)
    cases = verification_cases(spec, result, batch_size=batch_size, static=False)
    return cases if fmt.dynamic_spatial else tuple(c for c in cases if c.shape[1:] == result.input_shape)


def flatten(output: object) -> list[tuple[str, np.ndarray]]:
    """A module's output as ``(name, array)`` pairs: one tensor, or a dict (or sequence) of them."""
    if isinstance(output, torch.Tensor):
        return [("output", output.detach().float().numpy())]
    if isinstance(output, Mapping):
        return [(str(key) if name == "output" else f"{key}.{name}", value)
                for key, item in output.items() for name, value in flatten(item)]
    if isinstance(output, (list, tuple)):
        return [(f"{index}.{name}" if name != "output" else str(index), value)
                for index, item in enumerate(output) for name, value in flatten(item)]
    raise TypeError(f"the module returned {type(output).__name__}, not tensors")


References = dict[tuple[int, ...], tuple[torch.Tensor, list[tuple[str, np.ndarray]]]]


def references(module: nn.Module, cases: Sequence[Case]) -> References:
    """Each input size's seeded input (at its largest batch) and PyTorch's outputs, one pass per size."""
    found: References = {}
    module.eval()
    for case in cases:
        size = case.shape[1:]
        if size in found:
            continue
        index, batch = max(((i, c.shape[0]) for i, c in enumerate(cases) if c.shape[1:] == size),
                           key=lambda item: item[1])
        x = torch.randn((batch, *size), generator=torch.Generator().manual_seed(_SEED + index))
        with torch.no_grad():
            found[size] = x, flatten(module(x))
    return found


def compare(case: Case, actual: Sequence[np.ndarray], expected: list[tuple[str, np.ndarray]],
            tolerance: float) -> FormatCase:
    """The file's outputs against PyTorch's, each relative to its own largest value."""
    largest = max(float(np.abs(value).max(initial=0.0)) for _, value in expected)
    if len(actual) != len(expected):
        return FormatCase(case.name, case.shape, largest, None, None, tolerance,
                          shapes_differ=f"{len(actual)} outputs, PyTorch's {len(expected)}")
    worst_abs = worst_rel = 0.0
    non_finite = 0
    for got, (name, want) in zip(actual, expected):
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape:
            return FormatCase(case.name, case.shape, largest, None, None, tolerance,
                              shapes_differ=f"{name} {got.shape}, PyTorch's {want.shape}")
        finite = np.isfinite(got)
        non_finite += int((~finite).sum())
        difference = float(np.abs(np.where(finite, got, 0.0) - want).max(initial=0.0))
        worst_abs = max(worst_abs, difference)
        worst_rel = max(worst_rel, difference / max(float(np.abs(want).max(initial=0.0)), np.finfo(np.float32).tiny))
    return FormatCase(case.name, case.shape, largest, worst_abs, worst_rel, tolerance, non_finite=non_finite)


def check(fmt: Format, run: Runner, module: nn.Module, cases: Sequence[Case], *, precision: str, version: str,
          progress: Callable[[str], None] = lambda _: None) -> FormatCheck:
    """Run the loaded file on every case against ``module``; the timed cases' runs are the latency."""
    tolerance = fmt.tolerance[precision]
    results: list[FormatCase] = []
    latency: list[FormatTiming] = []
    expected_by_size = references(module, cases)
    try:
        for case in cases:
            progress(f"verifying {case.name} {case.shape} in {fmt.runtime}")
            x, expected = expected_by_size[case.shape[1:]]
            start = time.perf_counter()
            actual = run(np.ascontiguousarray(x[: case.shape[0]].numpy()))
            seconds = time.perf_counter() - start
            results.append(compare(case, actual, [(name, value[: case.shape[0]]) for name, value in expected],
                                   tolerance))
            if case.timed:
                latency.append(FormatTiming(case.shape[0], case.shape, 1000 * seconds))
    except Exception as error:  # every runtime raises its own types for a file it cannot run
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return FormatCheck(fmt.runtime, version, tolerance, tuple(results),
                           error=f"{fmt.runtime} could not run the file: {lines[0]}", latency=tuple(latency))
    return FormatCheck(fmt.runtime, version, tolerance, tuple(results), latency=tuple(latency))
