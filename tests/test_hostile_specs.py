"""Every file in tests/hostile/ is refused with one located line, exit 2, fast, and only SpecError.

The expected first error line of each file is in tests/hostile/expected.tsv
(reviewed by hand); a file in the directory without an entry fails the test.
"""

from __future__ import annotations

import errno
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.format.yaml_source import MAX_BYTES
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
SECONDS = 2.0


def test_corpus_is_large_and_fully_described() -> None:
    assert len(CORPUS) == 65, [p.name for p in CORPUS]
    assert sorted(EXPECTED) == [p.name for p in CORPUS]


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_cli_refuses_with_located_line(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["validate", str(path.relative_to(ROOT))])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines[0] == EXPECTED[path.name]
    assert all(LOCATED.match(line) for line in lines), lines
    assert "Traceback" not in result.output
    assert elapsed < SECONDS, f"{path.name} took {elapsed:.2f} s"


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_api_raises_only_spec_error(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_spec(path.relative_to(ROOT))
    error = caught.value
    assert f"{error.file}:{error.line}:" in EXPECTED[path.name]
    assert error.message and error.message in EXPECTED[path.name]
    assert error.path in EXPECTED[path.name]


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
