""""Did you mean …?" for unknown field names and part tags."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'memory_efficient'?)``-style hint, or a list of the valid names."""
    names = sorted(set(choices))
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; expected one of: " + ", ".join(names)
