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
from common import SPECS, fitted_exponent, main

FULL = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}
SMOKE = {13: (1, 1, 1, 1), 21: (1, 2, 2, 3)}


def _depth(config: tuple[int, ...]) -> int:
    """Weighted layers: two convs per dense layer, the stem, three transitions, the classifier.

    DenseNet-264 has 265 by this count; the paper's name is kept as the label.
    """
    return 2 * sum(config) + 5


def _seconds(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def run(*, smoke: bool) -> list[str]:
    configs = SMOKE if smoke else FULL
    columns = {"validate": [], "static pass": [], "build": [], "export": []}
    lines = ["scaling with depth (seconds; export = archspec.export_onnx without verification)",
             "  model  depth" + "".join(f"{name:>13s}" for name in columns)]
    with tempfile.TemporaryDirectory() as folder:
        for name, config in configs.items():
            overrides = tuple(f"body[{2 * i}].num_layers={n}" for i, n in enumerate(config))
            validate, spec = _seconds(lambda: archspec.load_spec(SPECS / "densenet121.yaml", overrides))
            static, _ = _seconds(lambda: archspec.static_pass(spec))
            build, _ = _seconds(lambda: archspec.build(spec))
            # A smoke run leaves export out: benchmark 4 already runs it, and it is the slow part.
            export = math.nan if smoke else _seconds(
                lambda: archspec.export_onnx(spec, Path(folder) / f"densenet{name}.onnx", verify=False)
            )[0]
            for column, seconds in zip(columns, (validate, static, build, export)):
                columns[column].append(seconds)
            lines.append(f"  {name:5d}  {_depth(config):5d}" + "".join(f"{columns[c][-1]:13.3f}" for c in columns))
    depths = [_depth(config) for config in configs.values()]
    lines.append("fitted exponent vs depth: " + ", ".join(
        f"{name} {fitted_exponent(depths, times):.2f}" for name, times in columns.items() if not math.isnan(times[0])))
    return lines


if __name__ == "__main__":
    main(run, __doc__)
