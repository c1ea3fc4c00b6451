"""``extends:``: a spec built on another file.

The base is read first, then the extending file is merged over it: mappings
merge key by key, all the way down; a list or a plain value is replaced whole.
Every value keeps the position where it was written, so an error in an
inherited value points into the base file.

A spec is untrusted, so ``extends`` is bounded: a base must lie inside the folder
of the spec named on the command line or inside the working directory (unless the
caller allows more), must be a regular file, the chain holds at most ``MAX_CHAIN``
files, and all of them together share one budget of values
(``yaml_source.MAX_NODES``). The merge is one pass over the chain's values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archspec.errors import SpecError, quoted
from archspec.format.paths import Loc
from archspec.format.yaml_source import Budget, Document, kind_of, read_document

MAX_CHAIN = 16
"""Most files one ``extends`` chain may hold."""
MAX_REFERENCE = 1024
"""Longest ``extends`` value, in characters (Linux's own limit on a path is 4,096)."""

KEY = "extends"
ALLOW_OUTSIDE = "--allow-extends-outside"
"""The command-line flag that lets ``extends`` leave the spec's folder and the working directory."""


def resolve(path: Path, shown: str | None = None, *, allow_outside: bool = False) -> Document:
    """Read ``path`` and every file it extends, merged into one document.

    Args:
        path: the spec file.
        shown: how errors name it (defaults to ``str(path)``).
        allow_outside: let a base lie outside the spec's folder and the working directory.

    Raises:
        SpecError: any file cannot be read or parsed, lies outside the allowed folders,
            the chain has a cycle or is longer than ``MAX_CHAIN``, or the files together
            hold more values than the reader's budget.
    """
    roots = None if allow_outside else _roots(path)
    chain: list[tuple[Document, set[Loc]]] = []
    _read_chain(path, str(path) if shown is None else shown, (), roots, Budget(), chain)
    return _merge_chain(chain)


def _roots(path: Path) -> tuple[str, ...]:
    """The folders a base may lie in: the spec's own folder tree and the working directory's."""
    try:
        here = os.getcwd()
    except OSError:  # the working directory was removed: the spec's folder alone
        here = str(path.parent)
    return tuple({os.path.realpath(path.parent), os.path.realpath(here)})


def _inside(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _read_chain(
    path: Path,
    shown: str,
    chain: tuple[tuple[str, str], ...],
    roots: tuple[str, ...] | None,
    budget: Budget,
    documents: list[tuple[Document, set[Loc]]],
) -> None:
    """Append ``path``'s chain to ``documents``, base first, each with its replaced locations."""
    document = read_document(path, shown, budget=budget)
    if KEY in document.data:
        where = document.values[(KEY,)]
        reference = document.data.pop(KEY)
        document.drop((KEY,))
        if not isinstance(reference, str) or not reference.strip():
            raise SpecError(where.problem(f"must be a path to a spec file (got {quoted(reference)})", KEY))
        if len(reference) > MAX_REFERENCE or "\0" in reference:
            raise SpecError(where.problem(
                f"a path of {len(reference):,} characters is not a spec file "
                f"(at most {MAX_REFERENCE:,})", KEY))
        chain = (*chain, (os.path.realpath(path), shown))
        base_path = path.parent / reference
        base_shown = os.path.normpath(os.path.join(os.path.dirname(shown), reference))
        real = os.path.realpath(base_path)
        reals = [earlier for earlier, _ in chain]
        if real in reals:
            start = reals.index(real)
            names = [name for _, name in chain[start:]] + [chain[start][1]]
            raise SpecError(where.problem("extends cycle: " + " → ".join(names), KEY))
        if len(chain) >= MAX_CHAIN:
            raise SpecError(where.problem(f"more than {MAX_CHAIN} files in the extends chain", KEY))
        if roots is not None and not _inside(real, roots):
            raise SpecError(where.problem(
                f"base spec {quoted(base_shown)} is outside the spec's folder and the working "
                f"directory; pass {ALLOW_OUTSIDE} to read it", KEY))
        try:
            kind = kind_of(os.stat(base_path).st_mode)  # by kind, before it is opened
        except OSError as error:
            reason = "no such file" if isinstance(error, FileNotFoundError) else error.strerror
            raise SpecError(where.problem(f"cannot read base spec {quoted(base_shown)}: {reason}", KEY)) from None
        if kind is not None or not os.access(base_path, os.R_OK):
            reason = kind or "not a readable file"
            raise SpecError(where.problem(f"cannot read base spec {quoted(base_shown)}: {reason}", KEY))
        _read_chain(base_path, base_shown, chain, roots, budget, documents)
    replaced: set[Loc] = set()
    if documents:
        document.data = _merge(documents[-1][0].data, document.data, (), replaced)
    documents.append((document, replaced))


def merge(base: Document, over: Document) -> Document:
    """``over`` laid on ``base``: mappings merge deeply, everything else is replaced."""
    replaced: set[Loc] = set()
    merged = Document(_merge(base.data, over.data, (), replaced), over.values, over.keys)
    return _merge_chain([(base, set()), (merged, replaced)])


def _merge_chain(chain: list[tuple[Document, set[Loc]]]) -> Document:
    """The last document's data, with each value's position from the file that last wrote it.

    Walks the chain from the top: a position in a base survives unless a file above it
    replaced that value or one of its ancestors. One pass over all positions; each check
    looks up one prefix per distinct length of the replaced locations.
    """
    top = chain[-1][0]
    merged = Document(top.data)
    blocked: set[Loc] = set()
    for document, replaced in reversed(chain):
        lengths = sorted({len(loc) for loc in blocked})
        for own, table in ((document.values, merged.values), (document.keys, merged.keys)):
            for loc, where in own.items():
                if loc in table or any(loc[:size] in blocked for size in lengths if size <= len(loc)):
                    continue
                table[loc] = where
        blocked |= replaced
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
