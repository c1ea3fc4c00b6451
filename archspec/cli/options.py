"""Options shared by every command that reads a spec."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

import archspec
from archspec import DEFAULT_MAX_PARAMS, parse_bytes

EXIT_VERIFICATION_FAILED = 1
"""A file that does not match PyTorch (or a fit that fails at batch 1): not bad input, not a crash."""


@contextlib.contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """A spinner on stderr when it is a terminal; silence otherwise (pipes, CI, tests)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _: None
        return
    with console.status("starting") as status:
        yield status.update


extends_option = click.option(
    "--allow-extends-outside", "allow_extends_outside", is_flag=True,
    help="Let extends: read base specs outside the spec's folder and the working directory "
    "(only for specs you trust; docs/security.md).",
)


def spec_source(spec: str, overrides: tuple[str, ...],
                allow_extends_outside: bool) -> tuple[str | dict[str, Any], tuple[str, ...]]:
    """What a command hands the API for SPEC: the path and its overrides, or, where bases may lie
    anywhere, the spec loaded under that rule as a mapping (the API reads a path under the default)."""
    if not allow_extends_outside:
        return spec, overrides
    loaded = archspec.load_spec(spec, overrides, allow_extends_outside=True)
    return loaded.model_dump(mode="json", exclude_unset=True), ()


spec_argument = click.argument("spec", type=click.Path(dir_okay=False))

overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a field before validation, e.g. head.num_classes=10 or "
    "body[2].num_layers=32; VALUE is read as a YAML scalar. Repeatable.",
)


def max_params_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-params``: the resource guard's parameter limit (``validate`` checks it without torch)."""
    return click.option(
        "--max-params", type=click.IntRange(min=1), default=DEFAULT_MAX_PARAMS, show_default=True,
        help="Refuse specs with more parameters than this.",
    )(command)


def guard_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-params`` and ``--max-memory``: the resource guard's limits, for commands that allocate."""
    command = click.option(
        "--max-memory", metavar="SIZE",
        help="Refuse specs whose parameters and forward pass need more, e.g. 8GiB "
        "(default: this machine's memory).",
    )(command)
    return max_params_option(command)


def memory_limit(text: str | None) -> int | None:
    """The ``--max-memory`` value in bytes; ``None`` means this machine's memory."""
    return None if text is None else parse_bytes(text, option="--max-memory")


def count(number: int) -> str:
    """``7978856`` → ``7,978,856``."""
    return f"{number:,}"


def shape(dims: tuple[int, ...]) -> str:
    """``(1, 3, 224, 224)`` → ``(1, 3, 224, 224)`` with no trailing comma for one dim."""
    return "(" + ", ".join(str(d) for d in dims) + ")"
