"""Benchmark: int8 and fp16 files against the fp32 file under onnxruntime's CPU provider, batch 8.

For the tutorial and DenseNet-121, with seeded random weights and norm statistics
(``tests/nontrivial.py``): export fp32 with ``archspec.export_onnx``, make the fp16 and
int8 files with ``archspec.exporters.deployment`` (int8 calibrated on seeded inputs) and
print each file's size, its error against PyTorch, and its median time per batch. The
files run in turn, one call each per round, so that a busy machine slows all of them alike.
Issue 14's target: int8 at most 0.9× the fp32 file's time, where the CPU has integer
dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX; the first line names them): without
them onnxruntime's int8 convolutions are no faster than fp32 ones, and no target is set.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

import archspec
from archspec.exporters.deployment import deploy, settle
from archspec.exporters.precision import NO_INT8_DOT_PRODUCT, int8_dot_product
from common import ROOT, SPECS, main, ratio_line

sys.path.insert(0, str(ROOT))  # the seeded non-trivial state the tests use
from tests.nontrivial import randomize_state  # noqa: E402

TARGET_INT8 = 0.9
BATCH = 8
CALIBRATION_INPUTS = 32


def _session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: on a shared machine spinning threads time
    # the neighbours (DenseNet-121 int8/fp32 ranged 0.82-1.01× spinning, 0.66-0.71× not).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _alternating(sessions: dict[str, onnxruntime.InferenceSession], feed: np.ndarray, repeats: int
                 ) -> dict[str, float]:
    """Median seconds per batch of each session, timed in turn round after round after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, {"input": feed})
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"input": feed})
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _int8_target(support: str) -> float | None:
    """0.9 where the CPU has integer dot-product instructions; none where it has none or it is unknown."""
    return None if support == "unknown" or support.startswith(NO_INT8_DOT_PRODUCT) else TARGET_INT8


def _one(name: str, spec_path: Path, overrides: tuple[str, ...], folder: Path, repeats: int) -> list[str]:
    spec = archspec.load_spec(spec_path, overrides)
    torch.manual_seed(0)
    module = randomize_state(archspec.build(spec), seed=3).eval()
    weights, fp32_path = folder / f"{name}.pt", folder / f"{name}.onnx"
    torch.save(module.state_dict(), weights)
    archspec.export_onnx(spec, fp32_path, weights=weights, provider="cpu", verify=False)
    fp32 = onnx.load(fp32_path)
    shape = spec.input.sample_shape()
    calibration = folder / f"{name}-calibration.npy"
    np.save(calibration, np.random.default_rng(0).standard_normal((CALIBRATION_INPUTS, *shape)).astype(np.float32))
    cases = [(f"batch {BATCH}", (BATCH, *shape))]
    models, lines = {"fp32": fp32}, []
    for precision, options in (("fp16", {}), ("int8", {"calibration": calibration})):
        start = time.perf_counter()
        model, verdict = deploy(fp32, module, spec, settle(spec, precision=precision, **options), cases)
        took = time.perf_counter() - start
        assert verdict is not None
        models[precision] = model
        ratio = len(model.SerializeToString()) / fp32_path.stat().st_size
        lines.append(f"{name} {precision}: {ratio:.3f}× the fp32 file ({fp32_path.stat().st_size / 1e6:.1f} MB), "
                     f"made and checked in {took:.1f} s; " + "; ".join(case.describe() for case in verdict.cases))
    feed = np.random.default_rng(1).standard_normal((BATCH, *shape)).astype(np.float32)
    medians = _alternating({precision: _session(model) for precision, model in models.items()}, feed, repeats)
    lines.append(ratio_line(f"{name} batch {BATCH}: int8 / fp32 (median of {repeats}, alternating)",
                            medians["int8"], medians["fp32"], _int8_target(int8_dot_product()), unit="ms"))
    lines.append(ratio_line(f"{name} batch {BATCH}: fp16 / fp32 (CPU runs fp16 convolutions in fp32 between casts)",
                            medians["fp16"], medians["fp32"], None, unit="ms"))
    return lines


def run(*, smoke: bool) -> list[str]:
    repeats = 1 if smoke else 9
    small = ("input.height=32", "input.width=32") if smoke else ()
    one_layer = tuple(f"body[{2 * i}].num_layers=1" for i in range(4)) + ("input.height=64", "input.width=64")
    lines = [f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider (threads not spinning), batch {BATCH}, "
             f"int8 calibrated on {CALIBRATION_INPUTS} seeded standard-normal inputs; "
             f"CPU integer dot product: {int8_dot_product()}"]
    with tempfile.TemporaryDirectory() as folder:
        lines += _one("tutorial", SPECS / "tutorial.yaml", small, Path(folder), repeats)
        lines += _one("DenseNet-121" + (" (1 layer per block)" if smoke else ""), SPECS / "densenet121.yaml",
                      one_layer if smoke else (), Path(folder), repeats)
    return lines


if __name__ == "__main__":
    main(run, __doc__)
