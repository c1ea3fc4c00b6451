"""Every file in tests/hostile/ is refused with one located line, exit 2, within bounded work,
and only SpecError.

The expected first error line of each file is in tests/hostile/expected.tsv
(reviewed by hand); a file in the directory without an entry fails the test.
Work is bounded by what a child process measures of itself (its CPU time and its
peak memory while reading each file), never by the clock, so a busy machine
cannot fail it. (tests/hostile/chain/ holds the bases of extends_budget.yaml.)
"""

from __future__ import annotations

import errno
import json
import re
import resource
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.errors import printable
from archspec.format.yaml_source import MAX_BYTES
from tests import bounded
from tests.conftest import ROOT, run_cli
from tests.refused_open import refuse_open

HOSTILE = ROOT / "tests" / "hostile"
EXPECTED = dict(
    line.split("\t", 1)
    for line in (HOSTILE / "expected.tsv").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
)
CORPUS = sorted(p for p in HOSTILE.iterdir() if p.suffix in (".yaml", ".json"))
# FILE:LINE:COL: [dotted.path: ]message — the one form every located error takes.
LOCATED = re.compile(r"^[^:\s]+:\d+:\d+: \S.*$")
# Reading any one file: the worst (extends_budget, billion_laughs) measured 0.08-0.10 s of CPU
# and 5-17 MiB above the reader's own footprint; a chain of 16 aliased files took 48-133 s before
# the budget was shared, and a reader without a budget needs gigabytes.
CPU_SECONDS = 1.0
PEAK_BYTES = 64 << 20
# The child reads every file and reports, per file, its CPU time and how far its peak resident
# memory (VmHWM, reset before each file through /proc/self/clear_refs) rose.
_MEASURE = """
import json, sys, time
import archspec

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

archspec.load_spec("specs/tutorial.yaml")  # imports and builds the schema first
measured = {}
for name in sys.argv[1:]:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before, started = peak(), time.process_time()
    try:
        archspec.load_spec(name)
    except archspec.SpecError:
        pass
    measured[name] = (time.process_time() - started, peak() - before)
print(json.dumps(measured))
"""


def test_corpus_is_large_and_fully_described() -> None:
    assert len(CORPUS) == 81, [p.name for p in CORPUS]
    assert sorted(EXPECTED) == [p.name for p in CORPUS]


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_cli_refuses_with_located_line(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["validate", str(path.relative_to(ROOT))])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines[0] == EXPECTED[path.name]
    assert all(LOCATED.match(line) for line in lines), lines
    assert "Traceback" not in result.output
    assert len(lines) <= 51  # one line per problem, at most 50 of them and a "more" line


def test_reading_each_file_is_bounded_in_cpu_and_memory() -> None:
    names = [str(path.relative_to(ROOT)) for path in CORPUS]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = bounded.run([sys.executable, "-c", _MEASURE, *names], cwd=ROOT, cpu_seconds=120)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert sorted(measured) == sorted(names)
    over = {name: (round(cpu, 3), peak >> 20) for name, (cpu, peak) in measured.items()
            if cpu > CPU_SECONDS or peak > PEAK_BYTES}
    assert not over, f"over {CPU_SECONDS} s of CPU or {PEAK_BYTES >> 20} MiB: {over}"
    # The whole child, import included, as the kernel counted it.
    child_cpu = (children.ru_utime + children.ru_stime
                 - children_before.ru_utime - children_before.ru_stime)
    assert child_cpu < 30 + CPU_SECONDS * len(names), child_cpu


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_api_raises_only_spec_error(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(path.relative_to(ROOT))
    error = caught.value
    assert f"{error.file}:{error.line}:" in EXPECTED[path.name]
    assert error.message and error.message in EXPECTED[path.name]
    assert printable(error.path) in EXPECTED[path.name]  # raw in the API, escaped when printed


def test_subprocess_has_no_traceback_and_exit_2() -> None:
    # The real entry point, for the worst offenders: code execution and an alias bomb.
    result = run_cli("validate", "tests/hostile/python_object.yaml", "tests/hostile/billion_laughs.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [EXPECTED["python_object.yaml"], EXPECTED["billion_laughs.yaml"]]


def test_file_over_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("archspec: 1\ndescription: '" + "x" * MAX_BYTES + "'\n", encoding="utf-8")
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(big)
    assert str(caught.value) == f"{big}: file is larger than the 1,048,576-byte limit for a spec"


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read spec: a directory"
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(tmp_path / "none.yaml")
    assert str(caught.value) == f"{tmp_path / 'none.yaml'}: cannot read spec: No such file or directory"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The system refuses the read (EACCES), as it does a mode-0 file to anyone but root.
    secret = tmp_path / "secret.yaml"
    secret.write_text("archspec: 1\n", encoding="utf-8")
    refuse_open(monkeypatch, lambda path: path == secret, errno.EACCES)
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(secret)
    assert str(caught.value) == f"{secret}: cannot read spec: Permission denied"
    result = CliRunner().invoke(main, ["validate", str(secret)])
    assert (result.exit_code, result.stderr) == (2, f"{secret}: cannot read spec: Permission denied\n")
