"""Export time: ``archspec.export_onnx`` on DenseNet-121 *with* its verification, against torch's
bare TorchScript exporter on the same module with dynamic batch, height and width.

Measured two ways, each side alternating with the other, medians and their ratio printed:

- **In one process**, after an untimed round each. archspec's time is the whole call: load and
  check the spec, build the network, write the graph (the emitters), verify it under
  onnxruntime on three inputs against the PyTorch module, time batch 1 and batch 4, run
  ``onnx.checker``, rename the file into place. torch's is ``torch.onnx.export(dynamo=False,
  dynamic_axes=...)`` alone, on a module built beforehand.
- **As a user runs them**, each in a fresh interpreter: ``archspec export SPEC --onnx OUT``
  against a script that builds the same network and calls the same ``torch.onnx.export``
  (interpreter start and imports on both sides, as in issue 13's 42 s against 5.4 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import archspec
from common import SPECS, machine

TARGET = 1.5  # issue 13: at most 1.5× torch's bare TorchScript export, verification included
_SMOKE = tuple(f"body[{2 * i}].num_layers=1" for i in range(4)) + ("input.height=64", "input.width=64")


def _torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})


# The torch side as a user would write it: build the network, export it, nothing else.
_TORCH_SCRIPT = """
import sys, warnings, torch, archspec
warnings.simplefilter("ignore")
module = archspec.build(sys.argv[1], overrides=tuple(sys.argv[4:])).eval()
size = int(sys.argv[3])
torch.onnx.export(module, (torch.randn(2, 3, size, size),), sys.argv[2], dynamo=False, input_names=["input"],
                  output_names=["logits"],
                  dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
"""


def _wall(command: list[str]) -> float:
    """Seconds a fresh interpreter takes to run ``command`` (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def _fresh(folder: Path, overrides: tuple[str, ...], size: int, repeats: int) -> tuple[list[float], list[float]]:
    """``archspec export`` and the torch script, each in a new interpreter, alternating."""
    spec = str(SPECS / "densenet121.yaml")
    sets = [arg for override in overrides for arg in ("--set", override)]
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeats):
        ours.append(_wall([sys.executable, "-m", "archspec", "export", spec, "--onnx", str(folder / "cli.onnx"), *sets]))
        theirs.append(_wall([sys.executable, "-c", _TORCH_SCRIPT, spec, str(folder / "script.onnx"), str(size),
                             *overrides]))
    return ours, theirs


def _steps(report_steps: list[tuple[str, float]], total: float) -> str:
    """Where archspec's time went, by step, from its progress messages."""
    grouped: dict[str, float] = {}
    for (step, start), (_, end) in zip(report_steps, [*report_steps[1:], ("end", total)]):
        key = step.split(":")[0].split(" (")[0]
        grouped[key] = grouped.get(key, 0.0) + end - start
    return "; ".join(f"{step} {seconds:.2f} s" for step, seconds in grouped.items())


def run(*, smoke: bool, repeats: int = 3) -> list[str]:
    overrides = _SMOKE if smoke else ()
    repeats = 1 if smoke else repeats
    spec = SPECS / "densenet121.yaml"
    module = archspec.build(spec, overrides=overrides).eval()
    size = 64 if smoke else 224
    example = torch.randn(2, 3, size, size)
    ours: list[float] = []
    theirs: list[float] = []
    steps: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(repeats + 1):  # round 0 warms both up (imports, first allocations)
            steps[:] = [("loading the spec", 0.0)]
            start = time.perf_counter()
            report = archspec.export_onnx(spec, Path(folder) / "archspec.onnx", overrides=overrides,
                                          progress=lambda step: steps.append((step, time.perf_counter() - start)))
            mine = time.perf_counter() - start
            start = time.perf_counter()
            _torchscript(module, example, Path(folder) / "torchscript.onnx")
            bare = time.perf_counter() - start
            if round_:
                ours.append(mine)
                theirs.append(bare)
        fresh_ours, fresh_theirs = _fresh(Path(folder), overrides, size, repeats)
    latency = ", ".join(f"{t.describe()} on {t.provider}" for t in report.verification.latency)
    return [
        f"DenseNet-121{' (1 layer per block, 64×64)' if smoke else ''}, {size}×{size}, "
        f"median of {repeats} alternating runs, load average {os.getloadavg()[0]:.1f}",
        "in one process:",
        *_compared("archspec.export_onnx with verification", ours,
                   "torch.onnx.export(dynamo=False, dynamic batch/height/width), bare", theirs),
        f"  archspec's last run by step: {_steps(steps, mine)}",
        f"  verification {'passed' if report.verification.passed else 'FAILED'}, latency {latency}",
        "each in a fresh interpreter:",
        *_compared("archspec export SPEC --onnx OUT", fresh_ours,
                   "python -c 'build the network; torch.onnx.export(dynamo=False, ...)'", fresh_theirs),
    ]


def _compared(ours_label: str, ours: list[float], theirs_label: str, theirs: list[float]) -> list[str]:
    ratio = statistics.median(ours) / statistics.median(theirs)
    return [
        f"  {ours_label}: {statistics.median(ours):.2f} s (runs {', '.join(f'{t:.2f}' for t in ours)})",
        f"  {theirs_label}: {statistics.median(theirs):.2f} s (runs {', '.join(f'{t:.2f}' for t in theirs)})",
        f"  ratio: {ratio:.2f}× (target ≤ {TARGET:.1f}×, {'met' if ratio <= TARGET else 'MISSED'})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs, measures nothing")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, help="torch threads on both sides, in every interpreter (default: "
                        "torch's own choice); one avoids OpenMP's spin-waiting when other work shares the cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the fresh interpreters' torch
    print(machine())
    print("\n".join(run(smoke=args.smoke, repeats=args.repeats)))


if __name__ == "__main__":
    main()
