"""Every format side by side: written, proven, timed on this machine's CPU, in one table.

All formats get the same network: the spec's weights when given, otherwise one fresh network
with seeded random norm statistics, affine values and biases (``randomize_state``), saved once
and loaded by every export, so that the errors compare like with like and a wrong norm shows.
The error is each format's own verification (``verify.check``) on the ONNX cases, relative
to the largest output; the latency is the median of ``rounds`` timed runs after one warm-up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archspec.builder import build_module
from archspec.errors import SpecError
from archspec.exporters.formats.export import FormatOptions, export_format, settle
from archspec.exporters.formats.registry import FORMATS, Format, get
from archspec.exporters.formats.verify import Runner, cases_for, check, flatten
from archspec.exporters.random_state import RANDOM_STATE_SEED, randomize_state
from archspec.format.schema import Spec
from archspec.format.shapes import static_pass
from archspec.weights import load_weights

ROUNDS = 5
_SEED = 0


@dataclass(frozen=True)
class BenchmarkRow:
    """One format: its file, its error, its time per batch; or why it was not run."""

    format: str
    precision: str
    runtime: str
    file_bytes: int | None = None
    max_relative_error: float | None = None
    """Largest ``|file − PyTorch|`` over the largest ``|PyTorch|``, over every verification case."""
    milliseconds: dict[int, float] | None = None
    """Median milliseconds per batch, by batch size."""
    skipped: str | None = None
    """Why the format was not run here (not installed, cannot express the input, cannot run here)."""
    failed: str | None = None
    """The benchmark's own run of the file did not match PyTorch (its export's check passed)."""


@dataclass(frozen=True)
class BenchmarkReport:
    spec_name: str
    weights: str
    """The weights file, or how the seeded random network was made."""
    batches: tuple[int, ...]
    rounds: int
    rows: tuple[BenchmarkRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(run: Runner, x: np.ndarray, rounds: int) -> float:
    run(x)  # warm-up: first runs allocate and pick kernels
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _eager(module: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [value for _, value in flatten(module(torch.from_numpy(x)))]

    return run


def benchmark(spec: Spec, *, formats: Sequence[str] | None = None, precision: str = "fp32",
              batch_size: int = 4, weights: str | Path | None = None, rounds: int = ROUNDS,
              progress: Callable[[str], None] = lambda _: None) -> BenchmarkReport:
    """Write each format into a scratch folder, prove it, time batch 1 and ``batch_size``.

    Formats that cannot run here are rows with ``skipped`` saying why; a format that fails its
    verification raises (``VerificationError``), as its export would.
    """
    from archspec import export_onnx  # the ONNX file is written exactly as `archspec export` writes it

    names = [get(name).name for name in formats] if formats else list(FORMATS)
    result = static_pass(spec)
    batches = (1, max(batch_size, 2))
    rows: list[BenchmarkRow] = []
    with tempfile.TemporaryDirectory(prefix="archspec-benchmark-") as work:
        module = build_module(result)
        if weights is None:
            randomize_state(module, RANDOM_STATE_SEED)
            weights = Path(work) / "weights.pt"
            torch.save(module.state_dict(), weights)
            described = f"fresh, with seeded random norm statistics, affine values and biases (seed {RANDOM_STATE_SEED})"
        else:
            load_weights(module, weights)
            described = str(weights)
        module.eval()
        inputs = {batch: torch.randn((batch, *result.input_shape),
                                     generator=torch.Generator().manual_seed(_SEED)).numpy() for batch in batches}
        progress("timing PyTorch")
        rows.append(BenchmarkRow("pytorch", "fp32", f"PyTorch {torch.__version__} eager", None, 0.0,
                                 {batch: _timed(_eager(module), x, rounds) for batch, x in inputs.items()}))
        for name in names:
            options = FormatOptions(name, precision=precision, batch_size=batch_size)
            try:
                fmt = settle(result, options)
            except SpecError as error:
                rows.append(BenchmarkRow(name, precision, FORMATS[name].runtime, skipped=error.message))
                continue
            rows.append(_row(fmt, spec, module, options, weights, Path(work), inputs, rounds, progress, export_onnx))
    return BenchmarkReport(spec.name, described, batches, rounds, tuple(rows))


def _row(fmt: Format, spec: Spec, module: torch.nn.Module, options: FormatOptions, weights: str | Path, work: Path,
         inputs: dict[int, np.ndarray], rounds: int, progress: Callable[[str], None],
         export_onnx: Callable[..., Any]) -> BenchmarkRow:
    """One format's row; a fixed-shape format is written once per timed batch."""
    implementation = fmt.implementation()
    result = static_pass(spec)
    sizes: list[int] = []
    errors: list[float] = []
    timings: dict[int, float] = {}
    failures: list[str] = []
    for batch in ([max(inputs)] if fmt.dynamic_batch else list(inputs)):
        at = FormatOptions(fmt.name, precision=options.precision, batch_size=batch)
        out = work / f"{fmt.name}-{batch}{fmt.suffix}"
        if fmt.name == "onnx":
            progress("writing and verifying onnx")
            export_onnx(spec, out, weights=weights, precision=options.precision, batch_size=batch,
                        provider="cpu", progress=progress)
            files = [out]
        else:
            files = [Path(file) for file in export_format(spec, out, at, weights=weights, progress=progress).files]
        sizes.append(sum(file.stat().st_size for file in files))
        run = implementation.runner(out, precision=options.precision)
        verification = check(fmt, run, module, cases_for(fmt, spec, result, at.batch(fmt)),
                             precision=options.precision, version=implementation.version())
        if verification.max_relative_error is not None:
            errors.append(verification.max_relative_error)
        if not verification.passed:
            failures.append(verification.worst())
        for timed, x in inputs.items():
            if fmt.dynamic_batch or timed == batch:
                progress(f"timing {fmt.name} at batch {timed}")
                timings[timed] = _timed(run, x, rounds)
    return BenchmarkRow(fmt.name, options.precision, f"{fmt.runtime}, {implementation.version()}",
                        max(sizes), max(errors, default=None), timings, failed="; ".join(failures) or None)
