"""``archspec validate``: check spec files without importing torch."""

from __future__ import annotations

import sys

import click

from archspec.cli.options import count, overrides_option, shape
from archspec.errors import SpecError
from archspec.spec.load import load_spec
from archspec.spec.shapes import static_pass


@click.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@overrides_option
def command(specs: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Validate SPECS and print one line per file; exit 2 if any is invalid."""
    failed = False
    for path in specs:
        try:
            spec = load_spec(path, overrides)
        except SpecError as error:
            failed = True
            for problem in error.problems:
                click.echo(str(problem), err=True)
            continue
        result = static_pass(spec)
        click.echo(
            f"{path}: ok ({spec.name}, {count(result.params)} parameters, "
            f"output {shape(result.out_shape)})"
        )
    if failed:
        sys.exit(2)
