"""How long ``archspec validate specs/*.yaml specs/*/*.yaml`` takes, as a user runs it.

Prints the best wall time of a few runs of the real command, next to the
interpreter's own start-up (``python -c pass``), e.g.::

    python bench/validate_specs.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
BUDGET_S = 0.5  # issues 4 and 21: under half a second for all of specs/


def best_wall(command: list[str]) -> tuple[float, float]:
    """Fastest of ``RUNS`` runs of ``command``: (wall seconds, CPU seconds of the child).

    CPU time is printed too because wall time on a shared machine mostly measures the neighbours.
    """
    runs = []
    for _ in range(RUNS):
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        runs.append((wall, cpu))
    return min(runs)


def main() -> int:
    specs = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "specs").rglob("*.yaml"))
    validate, validate_cpu = best_wall([sys.executable, "-m", "archspec", "validate", *specs])
    imports, imports_cpu = best_wall([sys.executable, "-c", "import archspec.cli"])
    python, python_cpu = best_wall([sys.executable, "-c", "pass"])
    print(f"archspec validate ({len(specs)} specs): {validate:.3f} s wall, {validate_cpu:.3f} s CPU"
          f" (best of {RUNS})")
    print(f"import archspec.cli:             {imports:.3f} s wall, {imports_cpu:.3f} s CPU")
    print(f"python -c pass:                  {python:.3f} s wall, {python_cpu:.3f} s CPU")
    print(f"ratio: {validate / python:.1f}× the bare interpreter's wall time; budget {BUDGET_S} s of CPU "
          "(wall time on a shared machine adds the neighbours' share)")
    return 0 if validate_cpu < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
