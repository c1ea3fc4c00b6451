"""The benchmarks still run: ``python bench/run_all.py --smoke`` at tiny sizes (figures not checked)."""

from __future__ import annotations

import re
import sys

from tests import bounded
from tests.conftest import ROOT

TITLES = [
    "1. build",
    "2. eager inference",
    "3. training memory and step time",
    "4. export",
    "5. scaling",
    "6. startup",
    "7. training memory against depth",
]


def test_run_all_smoke_prints_every_benchmark_and_its_ratios():
    result = bounded.run([sys.executable, "bench/run_all.py", "--smoke"], cwd=ROOT, cpu_seconds=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch " in lines[0] and "onnxruntime " in lines[0]
    assert [re.sub(r" \(\d+\.\d s\)$", "", line[3:]) for line in lines if line.startswith("== ")] == TITLES
    # Two build ratios, one per eager batch (2), five memory and four step-time ratios
    # (9: live-memory and default-malloc runs), export time plus two per batch (5):
    # printed as "N.NN×" or "NN%".
    ratios = [line for line in lines if re.search(r"= \d+\.\d\d×|: \d+\.\d\d×|: \d+%", line)]
    assert len(ratios) == 2 + 2 + 9 + 5, "\n".join(ratios)
    assert any(line.startswith("fitted exponent vs depth: validate ") for line in lines)
    assert any(line.startswith("fitted exponent of activation memory vs dense layers: naive ") for line in lines)
    assert any(re.match(r"archspec validate \(\d+ specs\) \d+ ms vs python -c pass \d+ ms", l) for l in lines)
