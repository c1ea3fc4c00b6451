"""Options shared by every command that reads a spec."""

from __future__ import annotations

import click

spec_argument = click.argument("spec", type=click.Path(dir_okay=False))

overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a field before validation, e.g. head.num_classes=10 or "
    "body[2].num_layers=32; VALUE is read as a YAML scalar. Repeatable.",
)


def count(number: int) -> str:
    """``7978856`` → ``7,978,856``."""
    return f"{number:,}"


def shape(dims: tuple[int, ...]) -> str:
    """``(1, 3, 224, 224)`` → ``(1, 3, 224, 224)`` with no trailing comma for one dim."""
    return "(" + ", ".join(str(d) for d in dims) + ")"
