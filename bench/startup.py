"""Benchmark 6: ``archspec validate`` over every reference spec, wall time vs ``python -c pass``."""

from __future__ import annotations

import subprocess
import sys

from common import ROOT, SPECS, main, median_time


def run(*, smoke: bool) -> list[str]:
    repeats = 1 if smoke else 9
    specs = sorted(str(path) for path in SPECS.rglob("*.yaml"))

    def command(*args: str) -> None:
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)

    validate = median_time(lambda: command("-m", "archspec", "validate", *specs), repeats=repeats)
    bare = median_time(lambda: command("-c", "pass"), repeats=repeats)
    return [
        f"startup, median of {repeats}",
        f"archspec validate ({len(specs)} specs) {validate * 1000:.0f} ms vs python -c pass "
        f"{bare * 1000:.0f} ms = {validate / bare:.1f}× (validate's own work: {(validate - bare) * 1000:.0f} ms)",
    ]


if __name__ == "__main__":
    main(run, __doc__)
