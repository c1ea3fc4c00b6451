"""Benchmark 3: training memory and step time, naive vs memory-efficient dense blocks.

Each mode runs in a fresh interpreter so that one mode's allocations cannot hide
another's: the peak is the process's peak resident set size (``VmHWM``)
minus its size just before the first training step, i.e. the memory the step
needs above the model, its gradients' absence and the input batch. On a GPU the
peak is ``torch.cuda.max_memory_allocated`` above the allocation before the step.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from common import SPECS, main

from archspec.memory_fit import peak_resident, resident

MODES = ("naive", "archspec", "torchvision")
# Targets from issue 15: archspec's peak ≤ 22% of naive and ≤ 42% of torchvision's
# memory-efficient mode; step time ≤ 1.25× naive.
TARGET_VS_NAIVE = 0.22
TARGET_VS_TORCHVISION = 0.42
TARGET_TIME = 1.25


def _model(mode: str, size: str, spec: str, resolution: int):
    import torchvision

    import archspec

    efficient = "true" if mode == "archspec" else "false"
    if spec != "-":  # another spec (segmentation_memory.py): archspec's two modes only
        return archspec.build(spec, overrides=(*_resized(spec, resolution), f"defaults.memory_efficient={efficient}"))
    if size == "smoke":
        # A four-block bottleneck DenseNet small enough for a smoke test.
        overrides = tuple(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6))
    else:
        overrides = ()
    if mode == "torchvision":
        config = (2, 2, 2, 2) if size == "smoke" else (6, 12, 24, 16)
        return torchvision.models.DenseNet(32, config, 64, memory_efficient=True)
    return archspec.build(SPECS / "densenet121.yaml", overrides=(*overrides, f"defaults.memory_efficient={efficient}"))


def child(mode: str, batch: int, resolution: int, steps: int, size: str, spec: str = "-") -> dict[str, float]:
    """Train ``steps`` SGD steps of one mode; peak memory above the start, median step time.

    ``spec``: a spec file to train instead of DenseNet-121 (``-``), at ``resolution``; a
    network with per-position outputs (segmentation) gets a label per position."""
    import torch

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = _model(mode, size, spec, resolution).to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.randn(batch, *_input_shape(spec, resolution), device=device)
    classes, positions = _output_shape(spec, resolution)
    labels = torch.randint(0, classes, (batch, *positions), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resident()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimiser.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = peak_resident() - before
    # The first step pays one-off allocation costs; time the rest when there are any.
    timed = times[1:] if len(times) > 1 else times
    return {"peak_bytes": peak, "step_s": statistics.median(timed), "cuda": cuda}


def _resized(spec: str, resolution: int) -> tuple[str, ...]:
    """Overrides that give a spec's image input ``resolution``×``resolution``."""
    return (f"input.height={resolution}", f"input.width={resolution}")


def _input_shape(spec: str, resolution: int) -> tuple[int, ...]:
    """One sample's shape: DenseNet-121's image, or the spec's own, at ``resolution``."""
    if spec == "-":
        return (3, resolution, resolution)
    import archspec

    return archspec.static_pass(archspec.load_spec(spec, _resized(spec, resolution))).input_shape


def _output_shape(spec: str, resolution: int) -> tuple[int, tuple[int, ...]]:
    """Classes, and the positions that each get a label (none for a pooled classifier)."""
    if spec == "-":
        return 1000, ()
    import archspec

    out = archspec.static_pass(archspec.load_spec(spec, _resized(spec, resolution))).out_shape
    return out[0], tuple(out[1:])  # (classes,) or (classes, *spatial)


# glibc keeps freed blocks below its (self-raising, up to 32 MiB) mmap threshold in the
# heap, so RSS counts allocator leftovers; a fixed 128 KiB threshold makes RSS follow the
# live tensors (the CPU counterpart of CUDA's max_memory_allocated), but turns every
# mid-sized allocation into an mmap and its page faults, which slows every step. So each
# mode runs twice: memory is judged with the fixed threshold, step time with glibc's
# default; both settings' figures are printed.
ALLOCATORS = {
    "live memory (MALLOC_MMAP_THRESHOLD_=131072)": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
    "glibc default malloc": {},
}


def _measure(mode: str, settings: tuple, environment: dict[str, str]) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *map(str, settings)],
        capture_output=True, text=True, check=True, env={**env, **environment},
    )
    return json.loads(out.stdout.splitlines()[-1])


def _alternating(settings: tuple, environment: dict[str, str], rounds: int,
                 modes: tuple[str, ...] = MODES) -> dict[str, dict]:
    """Each mode measured ``rounds`` times, the modes taking turns, so that a busy spell of the
    machine slows every mode alike; the median step time and peak of each mode."""
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            runs[mode].append(_measure(mode, settings, environment))
    return {
        mode: {"peak_bytes": statistics.median(r["peak_bytes"] for r in results),
               "step_s": statistics.median(r["step_s"] for r in results), "cuda": results[0]["cuda"]}
        for mode, results in runs.items()
    }


def measured(settings: tuple, rounds: int, modes: tuple[str, ...] = MODES) -> tuple[dict[str, dict], bool]:
    """Every mode under each allocator setting (CUDA's statistics alone on a GPU), and whether on CUDA.

    ``settings``: batch, resolution, steps, size (``smoke``/``full``) and spec file (``-``:
    DenseNet-121), as ``child`` takes them."""
    import torch

    # On a GPU the caching allocator's statistics are the live memory, whatever glibc does.
    cuda = torch.cuda.is_available()
    allocators = {"CUDA max_memory_allocated": {}} if cuda else ALLOCATORS
    return {allocator: _alternating(settings, environment, rounds, modes)
            for allocator, environment in allocators.items()}, cuda


def run(*, smoke: bool) -> list[str]:
    batch, resolution, steps, size, _ = settings = (2, 64, 2, "smoke", "-") if smoke else (16, 224, 4, "full", "-")
    rounds = 1 if smoke else 3
    results, cuda = measured(settings, rounds)
    live = next(iter(results.values()))
    timed = live if cuda else results["glibc default malloc"]
    lines = [f"training step, DenseNet-121{' (2 layers per block)' if smoke else ''}, "
             f"batch {batch}, {resolution}×{resolution}, SGD, {'CUDA' if cuda else 'CPU'}, peak above the "
             f"pre-step size, {steps} steps; median of {rounds} alternating runs per mode"]
    for allocator, by_mode in results.items():
        lines.append(f"  {allocator}:")
        for mode in MODES:
            r = by_mode[mode]
            lines.append(f"    {mode:12s} peak {r['peak_bytes'] / 2**20:8.1f} MiB   step {r['step_s']:.3f} s")
    naive, ours, tv = (live[m] for m in MODES)
    lines.append(_memory_line("archspec memory-efficient / naive peak (live memory)", ours, naive, TARGET_VS_NAIVE))
    lines.append(_memory_line("archspec memory-efficient / torchvision memory-efficient peak (live memory)",
                              ours, tv, TARGET_VS_TORCHVISION))
    lines.append(_memory_line("torchvision memory-efficient / naive peak (live memory)", tv, naive, None))
    for allocator, by_mode in results.items():
        if by_mode is not live:
            lines.append(_memory_line(f"archspec memory-efficient / naive peak ({allocator})",
                                      by_mode["archspec"], by_mode["naive"], None))
            lines.append(_memory_line(f"archspec memory-efficient / torchvision peak ({allocator})",
                                      by_mode["archspec"], by_mode["torchvision"], None))
    for allocator, by_mode in results.items():
        ratio = by_mode["archspec"]["step_s"] / by_mode["naive"]["step_s"]
        target = f" (target ≤ {TARGET_TIME:.2f}×, {'met' if ratio <= TARGET_TIME else 'MISSED'})"
        lines.append(f"archspec memory-efficient / naive step time ({allocator}): "
                     f"{ratio:.2f}×{target if by_mode is timed else ''}")
        lines.append(f"torchvision memory-efficient / naive step time ({allocator}): "
                     f"{by_mode['torchvision']['step_s'] / by_mode['naive']['step_s']:.2f}×")
    return lines


def _memory_line(label: str, ours: dict, theirs: dict, target: float | None) -> str:
    ratio = ours["peak_bytes"] / theirs["peak_bytes"]
    verdict = f" (target ≤ {target:.0%}, {'met' if ratio <= target else 'MISSED'})" if target else ""
    return f"{label}: {ratio:.0%}{verdict}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, batch, resolution, steps, size, spec = sys.argv[2:8]
        print(json.dumps(child(mode, int(batch), int(resolution), int(steps), size, spec)))
    else:
        main(run, __doc__)
