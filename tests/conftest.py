"""Fixtures shared by the test modules: the reference specs and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import bounded

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((ROOT / "specs").rglob("*.yaml"))
SPEC_IDS = [str(path.relative_to(ROOT / "specs").with_suffix("")) for path in SPEC_FILES]


def run_cli(*args: str, cwd: Path = ROOT, cpu_seconds: int = 300) -> subprocess.CompletedProcess:
    """Run ``archspec ARGS`` as a user would, in a fresh interpreter, bounded by its CPU time."""
    return bounded.run([sys.executable, "-m", "archspec", *args], cwd=cwd, cpu_seconds=cpu_seconds)


@pytest.fixture(params=SPEC_FILES, ids=SPEC_IDS)
def spec_file(request: pytest.FixtureRequest) -> Path:
    return request.param


def pytest_terminal_summary(terminalreporter) -> None:
    """How many examples of README.md and docs/*.md ran, and how many the pages mark as not run in CI."""
    counts: dict[str, tuple[int, int]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "docs_examples":
                    counts[report.nodeid] = tuple(value)
    if counts:
        ran, skipped = (sum(column) for column in zip(*counts.values()))
        terminalreporter.write_line(
            f"docs examples: {ran} run, {skipped} not run in CI over {len(counts)} pages "
            f"(each marked in its page; the reasons are the SUBSKIPPED lines)")
