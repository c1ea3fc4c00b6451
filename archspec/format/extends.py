"""``extends:``: a spec built on another file.

The base is read first, then the extending file is merged over it: mappings
merge key by key, all the way down; a list or a plain value is replaced whole.
Every value keeps the position where it was written, so an error in an
inherited value points into the base file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archspec.errors import SpecError
from archspec.format.paths import Loc
from archspec.format.yaml_source import Document, read_document

MAX_CHAIN = 16
"""Most files one ``extends`` chain may hold."""

KEY = "extends"


def resolve(path: Path, shown: str | None = None) -> Document:
    """Read ``path`` and every file it extends, merged into one document.

    Raises:
        SpecError: any file cannot be read or parsed, the chain has a cycle or
            is longer than ``MAX_CHAIN``.
    """
    return _resolve(path, str(path) if shown is None else shown, ())


def _resolve(path: Path, shown: str, chain: tuple[tuple[str, str], ...]) -> Document:
    document = read_document(path, shown)
    if KEY not in document.data:
        return document
    where = document.values[(KEY,)]
    reference = document.data.pop(KEY)
    document.drop((KEY,))
    if not isinstance(reference, str) or not reference.strip():
        raise SpecError(where.problem(f"must be a path to a spec file (got {reference!r})", KEY))
    chain = (*chain, (os.path.realpath(path), shown))
    base_path = path.parent / reference
    base_shown = os.path.normpath(os.path.join(os.path.dirname(shown), reference))
    seen = [real for real, _ in chain]
    if os.path.realpath(base_path) in seen:
        start = seen.index(os.path.realpath(base_path))
        names = [name for _, name in chain[start:]] + [chain[start][1]]
        raise SpecError(where.problem("extends cycle: " + " → ".join(names), KEY))
    if len(chain) >= MAX_CHAIN:
        raise SpecError(where.problem(f"more than {MAX_CHAIN} files in the extends chain", KEY))
    if not base_path.is_file() or not os.access(base_path, os.R_OK):
        reason = "no such file" if not base_path.exists() else "not a readable file"
        raise SpecError(where.problem(f"cannot read base spec {base_shown}: {reason}", KEY))
    return merge(_resolve(base_path, base_shown, chain), document)


def merge(base: Document, over: Document) -> Document:
    """``over`` laid on ``base``: mappings merge deeply, everything else is replaced."""
    replaced: set[Loc] = set()
    data = _merge(base.data, over.data, (), replaced)
    merged = Document(data)
    for own, table in ((base.values, merged.values), (base.keys, merged.keys)):
        table.update(
            (loc, where) for loc, where in own.items()
            if not any(loc[:end] in replaced for end in range(1, len(loc) + 1))
        )
    merged.values.update(over.values)
    merged.keys.update(over.keys)
    return merged


def _merge(base: Any, over: Any, loc: Loc, replaced: set[Loc]) -> Any:
    if not (isinstance(base, dict) and isinstance(over, dict)):
        replaced.add(loc)
        return over
    result = dict(base)
    for key, value in over.items():
        here = (*loc, key)
        result[key] = _merge(base[key], value, here, replaced) if key in base else value
    return result

