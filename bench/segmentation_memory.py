"""Benchmark 8: training memory and step time of a segmentation network, naive vs memory-efficient.

FC-DenseNet103 (``specs/segmentation/fc_densenet103.yaml``) at 224×224, batch 4, SGD, by
default; ``--spec``, ``--batch`` and ``--resolution`` train another spec. Each mode runs in a
fresh interpreter, measured as ``train_memory.py`` measures DenseNet-121 (its ``child``): the
peak resident size above the size before the first step, once with glibc's mmap threshold
fixed (live memory) and once with glibc's default malloc (step time); on a GPU,
``torch.cuda.max_memory_allocated``. Per-position labels, cross-entropy.
"""

from __future__ import annotations

import argparse

from common import SPECS, machine
from train_memory import measured

MODES = ("naive", "archspec")
# Targets from issue 24: the memory-efficient live peak ≤ 40% of naive at ≤ 1.4× its step time.
TARGET_MEMORY = 0.40
TARGET_TIME = 1.4
SPEC = SPECS / "segmentation" / "fc_densenet103.yaml"


def run(*, smoke: bool, spec: str = str(SPEC), batch: int = 4, resolution: int = 224, steps: int = 3,
        rounds: int = 1) -> list[str]:
    if smoke:
        batch, resolution, steps = 2, 32, 2
    results, cuda = measured((batch, resolution, steps, "full", spec), rounds, MODES)
    allocators = list(results)
    live, timed = results[allocators[0]], results[allocators[-1]]
    lines = [f"training step, {spec}, batch {batch}, {resolution}×{resolution}, SGD, {'CUDA' if cuda else 'CPU'}, "
             f"peak above the pre-step size, median of steps 2-{steps}, {rounds} alternating run(s) per mode"]
    header = f"  {'':44s}{'naive':>14s}{'memory-efficient':>20s}{'ratio':>9s}"
    lines.append(header)
    for allocator, by_mode in results.items():
        naive, ours = by_mode["naive"], by_mode["archspec"]
        lines.append(f"  {'peak, ' + allocator:44s}{naive['peak_bytes'] / 2**20:10.1f} MiB"
                     f"{ours['peak_bytes'] / 2**20:16.1f} MiB{ours['peak_bytes'] / naive['peak_bytes']:8.0%}")
        lines.append(f"  {'step, ' + allocator:44s}{naive['step_s']:12.2f} s{ours['step_s']:18.2f} s"
                     f"{ours['step_s'] / naive['step_s']:8.2f}×")
    memory = live["archspec"]["peak_bytes"] / live["naive"]["peak_bytes"]
    time = timed["archspec"]["step_s"] / timed["naive"]["step_s"]
    lines.append(f"memory-efficient / naive live peak ({allocators[0]}): {memory:.0%} "
                 f"(target ≤ {TARGET_MEMORY:.0%}, {'met' if memory <= TARGET_MEMORY else 'MISSED'})")
    lines.append(f"memory-efficient / naive step time ({allocators[-1]}): {time:.2f}× "
                 f"(target ≤ {TARGET_TIME:.2f}×, {'met' if time <= TARGET_TIME else 'MISSED'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs, measures nothing")
    parser.add_argument("--spec", default=str(SPEC), help="spec file to train (default: FC-DenseNet103)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=224, help="input height and width")
    parser.add_argument("--steps", type=int, default=3, help="steps per run; the first is not timed")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per mode (medians)")
    args = parser.parse_args()
    print(machine())
    print("\n".join(run(smoke=args.smoke, spec=args.spec, batch=args.batch, resolution=args.resolution,
                        steps=args.steps, rounds=args.rounds)), flush=True)


if __name__ == "__main__":
    main()
