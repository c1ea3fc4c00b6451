"""What every benchmark shares: machine description, repeated timing, the specs.

Benchmarks are scripts, run from the repository root as ``python bench/NAME.py``
or all together with ``python bench/run_all.py``; they print their results.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def machine() -> str:
    """One line naming the CPU cores, torch, onnxruntime and the GPU if any."""
    import onnxruntime
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__}, {gpu}"
    )


def median_time(function: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fitted_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): 1 means linear growth, 2 quadratic."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)


def ratio_line(label: str, ours: float, theirs: float, target: float | None, unit: str = "s") -> str:
    """``label: 1.234 s vs 1.111 s = 1.11× (target ≤ 1.20×, met)``."""
    ratio = ours / theirs
    verdict = ""
    if target is not None:
        verdict = f" (target ≤ {target:.2f}×, {'met' if ratio <= target else 'MISSED'})"
    scale = 1000.0 if unit == "ms" else 1.0
    return f"{label}: {ours * scale:.3f} {unit} vs {theirs * scale:.3f} {unit} = {ratio:.2f}×{verdict}"


def densenet_pair(*, smoke: bool):
    """archspec's and torchvision's DenseNet-121 holding the same weights, in eval mode.

    The smoke size keeps one layer per block so that a test can afford it.
    """
    import torchvision

    import archspec

    config = (1, 1, 1, 1) if smoke else (6, 12, 24, 16)
    ours = archspec.build(
        SPECS / "densenet121.yaml",
        overrides=tuple(f"body[{2 * i}].num_layers={n}" for i, n in enumerate(config)),
    )
    theirs = torchvision.models.DenseNet(32, config, 64)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def main(run: Callable[..., list[str]], doc: str) -> None:
    """Command line of one benchmark script: ``--smoke`` for tiny sizes."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs, measures nothing")
    args = parser.parse_args()
    print(machine())
    print("\n".join(run(smoke=args.smoke)))
