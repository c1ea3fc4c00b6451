"""Docs that cannot drift: every example in README.md and docs/*.md prints what its page shows.

How an example runs, the ``...`` marker and the skip directive: ``tests/docs_examples.py``,
and for page authors docs/architecture.md ("Examples in the pages are tests").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import archspec
from tests.docs_examples import PAGES, ROOT, commands, first_difference, matches, run_page

PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_examples_print_what_the_page_shows(page: Path, subtests, tmp_path: Path, record_property) -> None:
    ran = skipped = 0
    for outcome in run_page(page, tmp_path):
        with subtests.test(msg=outcome.label):
            if outcome.status == "skipped":
                skipped += 1
                pytest.skip(f"{outcome.label}: not run in CI: {outcome.message}")
            ran += 1
            if outcome.status == "failed":
                pytest.fail(outcome.message, pytrace=False)
    # Summed over the pages and printed at the end of the run (tests/conftest.py).
    record_property("docs_examples", (ran, skipped))


# A table row that names a spec file in its first cell and ends with its parameter count.
_SPEC_ROW = re.compile(r"^\| `(specs/[\w/.-]+\.yaml)` \|.*\| (\d{1,3}(?:,\d{3})+) \|")


def spec_table_problems(page: Path, root: Path = ROOT) -> list[str]:
    """Rows of PAGE's spec tables whose parameter count is not the spec's."""
    problems = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if match := _SPEC_ROW.match(line):
            spec, shown = match[1], match[2]
            params = archspec.static_pass(archspec.load_spec(ROOT / spec)).params
            if shown != f"{params:,}":
                problems.append(f"{page.relative_to(root)}:{number}: {spec} has {params:,} "
                                f"parameters, the page says {shown}")
    return problems


TABLE_PAGES = [page for page in PAGES
               if any(_SPEC_ROW.match(line) for line in page.read_text(encoding="utf-8").splitlines())]


@pytest.mark.parametrize("page", TABLE_PAGES, ids=[str(page.relative_to(ROOT)) for page in TABLE_PAGES])
def test_spec_tables_state_each_specs_parameters(page: Path) -> None:
    """The tables of reference specs (README, the family page) hold numbers readers copy."""
    problems = spec_table_problems(page)
    assert not problems, "\n".join(problems)


# ---- the marker ----

def test_an_elided_output_still_compares_every_line_it_shows() -> None:
    shown = ("first", "...", "last")
    assert matches(shown, ["first", "last"])
    assert matches(shown, ["first", "a", "b", "last"])
    assert not matches(shown, ["first", "a", "last", "more"])
    assert not matches(shown, ["first", "a", "lost"])
    assert not matches(("first",), ["first", "second"]), "an output that goes on is a difference"
    assert not matches(("7,978,856 parameters",), ["7,978,865 parameters"])
    assert first_difference(("first", "...", "last"), ["first", "a", "lost"]) == 2
    assert first_difference(("first",), ["first", "second"]) == 1


def test_a_console_block_splits_into_commands_with_their_lines() -> None:
    session = commands("$ archspec validate \\\n    specs/tutorial.yaml\nout 1\n\n$ echo $?\n0\n", 10)
    assert [(c.line, c.text, c.expected, c.output_line) for c in session] == [
        (10, "archspec validate specs/tutorial.yaml", ("out 1",), 12),
        (14, "echo $?", ("0",), 15),
    ]


def _page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "pages" / "page.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(body, encoding="utf-8")
    return page


def _outcomes(tmp_path: Path, body: str) -> list[tuple[str, str, str]]:
    page = _page(tmp_path, body)
    return [(o.label, o.status, o.message)
            for o in run_page(page, tmp_path / "work", docs_root=page.parent)]


def test_an_exit_status_must_be_shown(tmp_path: Path) -> None:
    missing = "```console\n$ archspec validate missing.yaml\n...\n```\n"
    [(where, status, message)] = _outcomes(tmp_path, missing)
    assert (where, status) == ("page.md:1", "failed")
    assert "page.md:2: `$ archspec validate missing.yaml` exited with status 2" in message
    shown = "```console\n$ archspec validate missing.yaml\n...\n$ echo $?\n2\n```\n"
    assert _outcomes(tmp_path, shown) == [("page.md:1", "passed", "")]
    wrong = "```console\n$ archspec validate missing.yaml\n...\n$ echo $?\n1\n```\n"
    [(_, status, message)] = _outcomes(tmp_path, wrong)
    assert status == "failed" and message.startswith("page.md:5: `$ echo $?`"), message


def test_a_skipped_example_needs_a_reason(tmp_path: Path) -> None:
    body = ('<!-- skip: next "needs a GPU" -->\n\n```console\n$ archspec fit --measure\n```\n\n'
            '<!-- skip: next -->\n\n```python\nraise SystemExit(1)\n```\n')
    outcomes = _outcomes(tmp_path, body)
    assert outcomes[0] == ("page.md:3", "skipped", "needs a GPU")
    assert outcomes[1][:2] == ("page.md:7", "failed") and "needs a reason" in outcomes[1][2]


# ---- done when: a changed page or a changed message fails, naming the page and the line ----

def _mutated_copy(pages: Path, page: str, old: str, new: str) -> int:
    """Copy PAGE under PAGES with the first OLD replaced by NEW; the line OLD began on."""
    copy = pages / page
    copy.parent.mkdir(parents=True, exist_ok=True)
    text = (ROOT / page).read_text(encoding="utf-8")
    assert old in text, f"{page} no longer shows {old!r}; choose another number to change"
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def _failures_until(pages: Path, page: str, workspace: Path, line: int) -> list[str]:
    """Run the copied page's examples in order up to the one holding LINE; the failures."""
    failures = []
    for outcome in run_page(pages / page, workspace, docs_root=pages):
        if outcome.status == "failed":
            failures.append(outcome.message)
        if outcome.last_line >= line:
            break
    return failures


# One number per page whose examples run: parameter counts, a shape, a batch size.
CHANGED_NUMBERS = [
    ("README.md", "tutorial: 758,226 parameters", "tutorial: 758,227 parameters"),
    ("README.md", "6964106\n", "6964107\n"),
    ("docs/getting-started.md", "densenet121: 6,964,106 parameters", "densenet121: 6,964,160 parameters"),
    ("docs/walkthrough.md", "(192, 24, 24)  130,048", "(192, 24, 24)  130,084"),
    ("docs/walkthrough.md", "regressor    (1)       1,825", "regressor    (2)       1,825"),
    ("docs/diagram-and-fit.md", "(naive): 356", "(naive): 357"),
]


@pytest.mark.parametrize("page, old, new", CHANGED_NUMBERS,
                         ids=[f"{page}:{new.strip()}" for page, _, new in CHANGED_NUMBERS])
def test_a_changed_number_fails_naming_the_page_and_line(page: str, old: str, new: str,
                                                         tmp_path: Path) -> None:
    unchanged = _mutated_copy(tmp_path / "original", page, old, old)
    if _failures_until(tmp_path / "original", page, tmp_path / "work", unchanged):
        pytest.skip(f"{page} already differs from what the code prints before line {unchanged}: "
                    "test_examples_print_what_the_page_shows names the line")
    line = _mutated_copy(tmp_path / "pages", page, old, new)
    failures = _failures_until(tmp_path / "pages", page, tmp_path / "work", line)
    assert any(message.startswith(f"{page}:{line}: ") for message in failures), (
        f"changing {old.strip()!r} to {new.strip()!r} on {page}:{line} should fail there; "
        f"failures: {failures}")


def test_a_changed_error_message_fails_naming_the_page_and_line(tmp_path: Path, monkeypatch) -> None:
    """Reword "did you mean" in the library: the page that shows the error fails on its line."""
    from archspec.format import problems

    page, shown = "docs/getting-started.md", "did you mean 'memory_efficient'?"
    line = _mutated_copy(tmp_path / "pages", page, shown, shown)  # an unchanged copy
    monkeypatch.setattr(problems, "did_you_mean", lambda word, choices: "; perhaps a typo?")
    failures = _failures_until(tmp_path / "pages", page, tmp_path / "work", line)
    assert any(message.startswith(f"{page}:{line}: ") and "perhaps a typo" in message
               for message in failures), failures


def test_a_changed_table_count_fails_naming_the_page_and_line(tmp_path: Path) -> None:
    page = "README.md"
    line = _mutated_copy(tmp_path / "pages", page, "| 7,978,856 |", "| 7,978,865 |")
    assert spec_table_problems(tmp_path / "pages" / page, tmp_path / "pages") == [
        f"{page}:{line}: specs/densenet121.yaml has 7,978,856 parameters, the page says 7,978,865"]
