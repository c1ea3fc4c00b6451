"""Dotted field paths: ``("body", 2, "num_layers")`` ⇄ ``body[2].num_layers``."""

from __future__ import annotations

import re

Step = str | int
Loc = tuple[Step, ...]

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def dotted(loc: Loc | list[Step]) -> str:
    """``("body", 2, "num_layers")`` → ``body[2].num_layers``."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def parse_dotted(text: str) -> Loc | None:
    """``body[2].num_layers`` → ``("body", 2, "num_layers")``; ``None`` if it is not a path."""
    steps: list[Step] = []
    position = 0
    for match in _STEP.finditer(text):
        separator = text[position : match.start()]
        named = match.group(1) is not None
        if separator not in ("", ".") or (separator == ".") != (named and bool(steps)):
            return None
        steps.append(match.group(1) if named else int(match.group(2)))
        position = match.end()
    if not steps or position != len(text) or isinstance(steps[0], int):
        return None
    return tuple(steps)
