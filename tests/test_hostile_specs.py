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
import os
import re
import resource
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.errors import Problem, printable, quoted
from archspec.format.guard import check_resources
from archspec.format.load import load_document
from archspec.format.sizes import format_bytes, parse_bytes
from archspec.format.yaml_source import parse_text
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


# Plain values as YAML 1.2 reads them; a value YAML 1.1 reads otherwise is refused (docs/security.md).
@pytest.mark.parametrize(("text", "value"), [
    ("0o17", 15), ("0x1F", 31), ("-12", -12), ("1e3", 1000.0), ("1.5", 1.5), (".inf", float("inf")),
    ("true", True), ("False", False), ("~", None), ("null", None), ("'yes'", "yes"), ("'1:30'", "1:30"),
    ("2024-01-02", "2024-01-02"), (str(2**53), 2**53), (str(-(2**53)), -(2**53)),
])
def test_plain_values_read_as_yaml_1_2(text: str, value: object) -> None:
    assert parse_text(f"x: {text}").data == {"x": value}


@pytest.mark.parametrize(("text", "message"), [
    ("1:30", "ambiguous value '1:30': YAML 1.1 reads 90, YAML 1.2 reads '1:30' as text; "
             "write 90, or quote it for text"),
    ("yes", "ambiguous value 'yes': YAML 1.1 reads true, YAML 1.2 reads 'yes' as text; "
            "write true, or quote it for text"),
    ("OFF", "ambiguous value 'OFF': YAML 1.1 reads false, YAML 1.2 reads 'OFF' as text; "
            "write false, or quote it for text"),
    ("017", "ambiguous value '017': YAML 1.1 reads 15, YAML 1.2 reads 17; "
            "write 15 or 17 without the leading zero (0o17 is octal)"),
    ("0b11", "ambiguous value '0b11': YAML 1.1 reads 3, YAML 1.2 reads '0b11' as text; "
             "write 3, or quote it for text"),
    ("1_000.5", "ambiguous value '1_000.5': YAML 1.1 reads 1000.5, YAML 1.2 reads '1_000.5' as text; "
                "write 1000.5, or quote it for text"),
    (str(2**53 + 1), "integer '9007199254740993' is out of range: a spec's integers are at most 2**53 in size"),
    ("9" * 5000, "integer '999999999999999999999999999999999999999…' is out of range: "
                 "a spec's integers are at most 2**53 in size"),
])
def test_yaml_1_1_readings_are_refused(text: str, message: str) -> None:
    with pytest.raises(archspec.SpecError) as caught:
        parse_text(f"x: {text}", "f.yaml")
    assert str(caught.value) == f"f.yaml:1:4: x: {message}"


def test_aliases_nested_past_the_limit_are_refused_before_they_are_copied() -> None:
    # 40 anchors, each holding the one before 30 levels down: 1,200 levels once expanded, which
    # copy.deepcopy cannot even recurse into (RecursionError); no anchor alone is over 32 levels.
    lines = ["a0: &a0 " + "[" * 30 + "x" + "]" * 30]
    lines += [f"a{i}: &a{i} " + "[" * 30 + f"*a{i - 1}" + "]" * 30 for i in range(1, 40)]
    with pytest.raises(archspec.SpecError) as caught:
        parse_text("\n".join(lines), "deep.yaml")
    assert str(caught.value) == (
        "deep.yaml:2:39: a1[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
        "[0][0][0][0][0]: nested more than 32 levels deep (through alias *a0)")


def test_json_syntax_is_reported_as_json_with_its_position(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text('{"archspec": 1,\n  "name": "x",\n}\n', encoding="utf-8")
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(spec)
    assert str(caught.value) == f"{spec}:3:1: JSON syntax: Expecting property name enclosed in double quotes"
    spec.with_suffix(".yaml").write_text(spec.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(archspec.SpecError) as caught:  # the same text is YAML's to judge in a .yaml
        archspec.load_spec(spec.with_suffix(".yaml"))
    assert "JSON" not in str(caught.value)


def test_extends_stays_in_the_spec_folder_and_working_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "base.yaml").write_text("name: base\n", encoding="utf-8")
    (project / "spec.yaml").write_text("extends: ../elsewhere/base.yaml\n", encoding="utf-8")
    monkeypatch.chdir(project)
    with pytest.raises(archspec.SpecError) as caught:
        load_document("spec.yaml")
    assert caught.value.message == ("base spec '../elsewhere/base.yaml' is outside the spec's folder and the "
                                    "working directory; pass --allow-extends-outside to read it")
    allowed = load_document("spec.yaml", allow_extends_outside=True)
    assert allowed.data == {"name": "base"}
    monkeypatch.chdir(tmp_path)  # the working directory holds both
    assert load_document(project / "spec.yaml").data == {"name": "base"}


def test_extends_refuses_a_fifo_by_kind_without_opening_it(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would wait for a writer forever
    (tmp_path / "spec.yaml").write_text("extends: pipe.yaml\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for path in ("spec.yaml", "pipe.yaml"):
        with pytest.raises(archspec.SpecError) as caught:
            archspec.load_spec(path)
        assert caught.value.message in ("cannot read base spec 'pipe.yaml': a FIFO (named pipe)",
                                        "cannot read spec: a FIFO (named pipe)")


def test_errors_are_one_printable_line() -> None:
    problem = Problem("unknown field 'a\nx.yaml: ok'", path="defaults.\x1b[2J", file="x\n.yaml", line=1, column=2)
    assert str(problem) == "x\\n.yaml:1:2: defaults.\\x1b[2J: unknown field 'a\\nx.yaml: ok'"
    assert quoted("k" * 500) == "'" + "k" * 79 + "…'"
    assert quoted(10**5000) == "an integer of about 5,000 digits"


def test_sizes_are_bounded_before_arithmetic() -> None:
    assert format_bytes(10**400) == "more than 10^399 B"  # float(10**400) overflows
    assert format_bytes(3 * 1024**5) == "3.00 PiB"
    for text, message in [("0.0000001", "'0.0000001' is less than one byte"),
                          ("9" * 400 + "GiB", "expected a memory size such as 4GiB or 512MiB, got '"
                           + "9" * 79 + "…'"),
                          ("2000000YiB", "expected a memory size such as 4GiB or 512MiB, got '2000000YiB'"),
                          ("99999999999999TiB", "'99999999999999TiB' is more than 2**80 bytes")]:
        with pytest.raises(archspec.SpecError) as caught:
            parse_bytes(text, option="--memory")
        assert str(caught.value) == f"--memory: {message}"


def test_batch_size_is_bounded_before_arithmetic() -> None:
    spec = archspec.load_spec(ROOT / "specs" / "tutorial.yaml")
    for batch, shown in [(10**400, "an integer of about 400 digits"), (2**31 + 1, "2147483649"), (0, "0")]:
        with pytest.raises(archspec.SpecError) as caught:
            check_resources(spec, batch_size=batch)
        assert str(caught.value) == f"--batch-size: must be between 1 and 2**31, got {shown}"
