"""Random text and bytes fed to the loader raise SpecError and nothing else, and every
problem prints as one line of printable characters (nothing that moves a terminal's cursor).

CI runs ARCHSPEC_FUZZ_LOADER_EXAMPLES (default 300) examples per property; for a
long run: ``ARCHSPEC_FUZZ_LOADER_EXAMPLES=100000 pytest tests/test_fuzz_loader.py``.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archspec
from archspec.format.yaml_source import parse_text

EXAMPLES = int(os.environ.get("ARCHSPEC_FUZZ_LOADER_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text built from YAML's own punctuation finds more parser corners than plain unicode.
YAMLISH = st.text(alphabet=string.printable + "&*!|>%@`{}[]:,-?#'\"é\x00\ufeff", max_size=300)


def _loads_or_spec_error(path: Path) -> None:
    try:
        archspec.load_spec(path)
    except archspec.SpecError as error:
        assert error.problems and all(p.message for p in error.problems)
        assert all(str(p).isprintable() for p in error.problems), [str(p) for p in error.problems]


@FUZZ
@given(content=st.binary(max_size=400))
def test_random_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    _loads_or_spec_error(path)


@FUZZ
@given(text=st.one_of(YAMLISH, st.text(max_size=200)))
def test_random_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_spec_error(path)


@FUZZ
@given(text=st.one_of(YAMLISH, st.text(alphabet=string.printable + '{}[]:,"\\', max_size=200)))
def test_random_text_as_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.json"  # checked by JSON's grammar first, then by the reader
    path.write_text(text, encoding="utf-8")
    _loads_or_spec_error(path)


@FUZZ
@given(text=YAMLISH)
def test_random_text_as_override_value(text: str) -> None:
    try:
        parse_text(text, "--set")
    except archspec.SpecError as error:
        assert error.file == "--set" and error.line is not None
        assert all(str(p).isprintable() for p in error.problems)
