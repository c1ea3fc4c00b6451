"""The package contains no way for a spec or weights file to run code."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

SOURCES = sorted((ROOT / "archspec").rglob("*.py"))

# (what, pattern) — each must match nowhere in archspec/.
FORBIDDEN = [
    ("eval(", re.compile(r"(?<![\w.])eval\(")),
    ("exec(", re.compile(r"(?<![\w.])exec\(")),
    ("yaml.load( without a safe loader",
     re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\((?![^)]*Loader=yaml\.(C?SafeLoader))")),
    ("yaml Loader that is not safe", re.compile(r"Loader\s*=\s*yaml\.(C?Loader|C?UnsafeLoader|C?FullLoader)\b")),
    ("pickle.load", re.compile(r"pickle\.loads?\(")),
    ("torch.load( without weights_only=True", re.compile(r"torch\.load\((?![^)]*weights_only=True)")),
    ("__import__/importlib by name", re.compile(r"__import__\(|importlib\.import_module\(")),
]


def test_sources_found() -> None:
    assert len(SOURCES) >= 15


@pytest.mark.parametrize(("what", "pattern"), FORBIDDEN, ids=[w for w, _ in FORBIDDEN])
def test_no_code_execution(what: str, pattern: re.Pattern[str]) -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == [], f"{what}: {hits}"


def test_patterns_catch_what_they_should() -> None:
    samples = {
        "eval(": "x = eval(text)",
        "exec(": "exec(code)",
        "yaml.load( without a safe loader": "yaml.load(stream)",
        "yaml Loader that is not safe": "yaml.parse(text, Loader=yaml.Loader)",
        "pickle.load": "pickle.load(f)",
        "torch.load( without weights_only=True": "torch.load(path, map_location='cpu')",
        "__import__/importlib by name": "importlib.import_module(name)",
    }
    for what, pattern in FORBIDDEN:
        assert pattern.search(samples[what]), what
    assert not FORBIDDEN[5][1].search("torch.load(path, weights_only=True)")
