"""Memory sizes as people write them (``4GiB``, ``512MB``) and read them (``1.23 GiB``)."""

from __future__ import annotations

import re

from archspec.errors import Problem, SpecError, quoted

MAX_BYTES = 1 << 80
"""Largest size an option may give (1 YiB): far above any machine, small enough for exact arithmetic."""

_UNITS = {
    "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str, *, option: str) -> int:
    """``4GiB`` → 4294967296; ``option`` (``--memory``) names the flag in the error.

    Raises:
        SpecError: the text is not a positive number with an optional unit
            (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
    """
    match = _SIZE.match(text) if len(text) <= 40 else None
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS) or float(match.group(1)) <= 0:
        raise SpecError(
            Problem(f"expected a memory size such as 4GiB or 512MiB, got {quoted(text)}", option=option)
        )
    size = int(float(match.group(1)) * _UNITS[unit or "b"])  # at most 40 digits: a float is exact enough
    if size < 1:
        raise SpecError(Problem(f"{quoted(text)} is less than one byte", option=option))
    if size > MAX_BYTES:
        raise SpecError(Problem(f"{quoted(text)} is more than 2**80 bytes", option=option))
    return size


def format_bytes(size: float) -> str:
    """``1320702443`` → ``1.23 GiB``; any integer, however large, without overflowing a float."""
    if abs(size) >= 1024**7:  # past EiB: a power of ten from the bit length, no float arithmetic
        return f"more than 10^{int((abs(int(size)).bit_length() - 1) * 0.30103)} B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} EiB"
