"""Benchmark 5: how validate, static pass, build and export times grow with depth.

DenseNet-121/169/201 come from ``specs/``; DenseNet-264 (blocks 6, 12, 64, 48,
Huang et al. 2017, table 1) is DenseNet-121's spec with its block sizes
overridden here. The exponent is the least-squares slope of log(time) against
log(depth): 1 means linear.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import archspec
from common import SPECS, main

FULL = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}
SMOKE = {13: (1, 1, 1, 1), 21: (1, 2, 2, 3)}  # depth = 2 × layers + 5 (stem, 3 transitions, classifier)


def _seconds(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _exponent(depths: list[int], times: list[float]) -> float:
    xs, ys = [math.log(d) for d in depths], [math.log(t) for t in times]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def run(*, smoke: bool) -> list[str]:
    configs = SMOKE if smoke else FULL
    columns = {"validate": [], "static pass": [], "build": [], "export": []}
    lines = ["scaling with depth (seconds; export = archspec.export_onnx without verification)",
             "  depth  " + "".join(f"{name:>13s}" for name in columns)]
    with tempfile.TemporaryDirectory() as folder:
        for depth, config in configs.items():
            assert 2 * sum(config) + 5 == depth
            overrides = tuple(f"body[{2 * i}].num_layers={n}" for i, n in enumerate(config))
            validate, spec = _seconds(lambda: archspec.load_spec(SPECS / "densenet121.yaml", overrides))
            static, _ = _seconds(lambda: archspec.static_pass(spec))
            build, _ = _seconds(lambda: archspec.build(spec))
            # A smoke run leaves export out: benchmark 4 already runs it, and it is the slow part.
            export = math.nan if smoke else _seconds(
                lambda: archspec.export_onnx(spec, Path(folder) / f"densenet{depth}.onnx", verify=False)
            )[0]
            for name, seconds in zip(columns, (validate, static, build, export)):
                columns[name].append(seconds)
            lines.append(f"  {depth:5d}  " + "".join(f"{columns[n][-1]:13.3f}" for n in columns))
    depths = list(configs)
    lines.append("fitted exponent vs depth: " + ", ".join(
        f"{name} {_exponent(depths, times):.2f}" for name, times in columns.items() if not math.isnan(times[0])))
    return lines


if __name__ == "__main__":
    main(run, __doc__)
