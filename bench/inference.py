"""Benchmark 2: eager inference, archspec's DenseNet-121 vs torchvision's with the same weights."""

from __future__ import annotations

import torch

from common import densenet_pair, main, median_time, ratio_line

TARGET = 1.03  # issue 6: within 3% of torchvision's eager time


def run(*, smoke: bool) -> list[str]:
    resolution, batches, repeats = (64, (1, 2), 1) if smoke else (224, (1, 16), 5)
    ours, theirs = densenet_pair(smoke=smoke)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours, theirs = ours.to(device), theirs.to(device)
    lines = [f"eager inference, no_grad, {resolution}×{resolution}, {device}, median of {repeats}"]
    for batch in batches:
        images = torch.randn(batch, 3, resolution, resolution, device=device)
        with torch.no_grad():
            difference = (ours(images) - theirs(images)).abs().max().item()

            def timed(model: torch.nn.Module) -> float:
                def step() -> None:
                    model(images)
                    if device == "cuda":
                        torch.cuda.synchronize()

                return median_time(step, repeats=repeats)

            # Interleave the two so that a noisy neighbour hurts both alike.
            mine, vision = zip(*[(timed(ours), timed(theirs)) for _ in range(1 if smoke else 2)])
        lines.append(ratio_line(f"batch {batch}: archspec / torchvision (max |Δ| {difference:.1e})",
                                min(mine), min(vision), TARGET, unit="ms"))
    return lines


if __name__ == "__main__":
    main(run, __doc__)
