"""Benchmark 7: training memory against depth, naive vs memory-efficient (shared storage).

DenseNet-121, -169, -201 and -264 (blocks from Huang et al. 2017, table 1) at batch 8,
224×224, one SGD step each, measured by ``archspec.measure_step`` in a fresh process
(glibc's mmap threshold fixed, so resident memory follows the live tensors). The
activation peak is the measured peak less the parameters and their gradients. A naive
dense layer keeps its own concatenation, so a block's activations grow with the square
of its layers; with shared storage they grow with their number. The fitted exponent is
the least-squares slope of log(activation peak) against log(dense layers).
"""

from __future__ import annotations

import archspec
from common import SPECS, fitted_exponent, main

FULL = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}
SMOKE = {"a": (1, 1, 1, 1), "b": (2, 2, 2, 2)}
BATCH, SMOKE_BATCH = 8, 2
BYTES = 4  # float32


def run(*, smoke: bool) -> list[str]:
    configs = SMOKE if smoke else FULL
    batch = SMOKE_BATCH if smoke else BATCH
    side = 64 if smoke else 224
    lines = [f"training memory against depth (batch {batch}, {side}×{side}; MiB of activations at the peak)",
             f"  {'model':>6} {'layers':>7} {'naive':>10} {'shared':>10} {'ratio':>7}"]
    layers, peaks = [], {"naive": [], "memory_efficient": []}
    for name, config in configs.items():
        overrides = (*(f"body[{2 * i}].num_layers={n}" for i, n in enumerate(config)),
                     f"input.height={side}", f"input.width={side}")
        spec = archspec.load_spec(SPECS / "densenet121.yaml", overrides)
        weights = 2 * archspec.static_pass(spec).params * BYTES  # parameters and gradients
        for mode in peaks:
            measured = archspec.measure_step(spec, mode=mode, batch_size=batch)
            peaks[mode].append(measured.peak - weights)
        layers.append(sum(config))
        naive, shared = peaks["naive"][-1], peaks["memory_efficient"][-1]
        lines.append(f"  {name:>6} {layers[-1]:>7} {naive / 2**20:>10.0f} {shared / 2**20:>10.0f} "
                     f"{shared / naive:>7.2f}")
    lines.append("fitted exponent of activation memory vs dense layers: "
                 f"naive {fitted_exponent(layers, peaks['naive']):.2f}, "
                 f"memory-efficient {fitted_exponent(layers, peaks['memory_efficient']):.2f}")
    return lines


if __name__ == "__main__":
    main(run, __doc__)
