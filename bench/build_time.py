"""Benchmark 1: building DenseNet-121 from its spec vs ``torchvision.models.densenet121()``."""

from __future__ import annotations

import torchvision

import archspec
from common import SPECS, main, median_time, ratio_line

TARGET = 1.2  # issue 6: archspec.build within 1.2× of torchvision's constructor


def run(*, smoke: bool) -> list[str]:
    repeats = 1 if smoke else 7
    spec = archspec.load_spec(SPECS / "densenet121.yaml")
    ours = median_time(lambda: archspec.build(SPECS / "densenet121.yaml"), repeats=repeats)
    ours_validated = median_time(lambda: archspec.build(spec), repeats=repeats)
    theirs = median_time(torchvision.models.densenet121, repeats=repeats)
    return [
        f"build DenseNet-121, median of {repeats}",
        ratio_line("archspec.build(specs/densenet121.yaml) / torchvision.models.densenet121()", ours, theirs, TARGET),
        ratio_line("archspec.build(already validated Spec) / torchvision", ours_validated, theirs, TARGET),
    ]


if __name__ == "__main__":
    main(run, __doc__)
