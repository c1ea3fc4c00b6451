"""How close is ``archspec fit``'s estimate to a measured training step?

For the tutorial net, DenseNet-121 and MONAI's 3D DenseNet-121 (at 64³), each at two batch
sizes, in both modes: the estimate, the peak measured by ``archspec.measure_step`` (CPU:
peak resident memory with glibc's mmap threshold fixed; CUDA: ``max_memory_allocated``),
and on CPU also the peak with glibc's default allocator, whose retained free heap the
estimate does not model. The target is the estimate within ±25% of the measured peak.

Run from the repository root: ``python bench/fit_accuracy.py [SPEC…]`` (only those specs,
e.g. ``segmentation/fc_densenet56``; all of them take about ten minutes on
two busy CPU cores; DenseNet-121 at batch 16 naive needs about 2.5 GiB of memory).
"""

from __future__ import annotations

from common import SPECS, machine

import archspec
from archspec.memory_fit import measure
from archspec import format_bytes
from archspec.format.memory import MODES, estimate

# (spec, overrides, batches): the 3D spec at 64³ keeps its two batches under a minute each.
CASES = (
    ("tutorial", (), (32, 128)),
    ("densenet121", (), (8, 16)),
    ("monai/densenet121_3d", ("input.depth=64", "input.height=64", "input.width=64"), (2, 4)),
    # Segmentation at 64×64: skips held across the U, per-position outputs.
    ("segmentation/fc_densenet56", ("input.height=64", "input.width=64"), (2, 4)),
    ("segmentation/unet_densenet121", ("input.height=64", "input.width=64"), (2, 4)),
)
TARGET = 0.25


def _error(estimated: int, measured: int) -> float:
    return (estimated - measured) / measured


def main(names: list[str]) -> int:
    """Every case, or those whose spec is in ``names``."""
    print(machine())
    header = f"{'spec':<22}{'batch':>6}  {'mode':<17}{'estimate':>12}{'measured':>12}{'error':>8}"
    print(header + f"{'default malloc':>16}{'error':>8}")
    worst = 0.0
    for name, overrides, batches in (case for case in CASES if not names or case[0] in names):
        spec = archspec.load_spec(SPECS / f"{name}.yaml", overrides)
        for batch in batches:
            for mode in MODES:
                estimated = estimate(spec, mode=mode).total(batch)
                measured = measure(spec, mode=mode, batch_size=batch)
                row = (f"{name:<22}{batch:>6}  {mode:<17}{format_bytes(estimated):>12}"
                       f"{format_bytes(measured.peak):>12}{_error(estimated, measured.peak):>+8.0%}")
                worst = max(worst, abs(_error(estimated, measured.peak)))
                if measured.device == "cpu":
                    default = measure(spec, mode=mode, batch_size=batch, malloc_default=True).peak
                    row += f"{format_bytes(default):>16}{_error(estimated, default):>+8.0%}"
                print(row, flush=True)
    verdict = "within" if worst <= TARGET else "OUTSIDE"
    print(f"largest error {worst:.1%}: {verdict} the ±{TARGET:.0%} target")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
