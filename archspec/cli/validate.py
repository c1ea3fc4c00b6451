"""``archspec validate``: check spec files without importing torch."""

from __future__ import annotations

import sys

import click

import archspec
from archspec.cli.options import count, extends_option, max_params_option, overrides_option, shape


@click.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@overrides_option
@extends_option
@click.option("-v", "--verbose", is_flag=True,
              help="Also print each part's output shape, parameters and running total.")
@max_params_option
def command(specs: tuple[str, ...], overrides: tuple[str, ...], allow_extends_outside: bool, verbose: bool,
            max_params: int) -> None:
    """Validate SPECS and print one line per file; exit 2 if any is invalid or over --max-params."""
    failed = False
    for path in specs:
        try:
            spec = archspec.load_spec(path, overrides, allow_extends_outside=allow_extends_outside)
            result = archspec.static_pass(spec)
            archspec.check_resources(spec, max_params=max_params, check_memory=False, result=result)
        except archspec.SpecError as error:
            failed = True
            for problem in error.problems:
                click.echo(str(problem) if problem.file else f"{path}: {problem}", err=True)
            continue
        if verbose:
            click.echo(_table(result))
        click.echo(
            f"{path}: ok ({spec.name}, {count(result.params)} parameters, "
            f"output {shape(result.out_shape)})"
        )
    if failed:
        sys.exit(2)


def _table(result: archspec.StaticPass) -> str:
    """The static pass as a fixed-width table: part, type, output shape, parameters, running total."""
    rows = [("part", "type", "output", "params", "total"),
            ("input", "", shape(result.input_shape), "", "")]
    total = 0
    for stage in result.stages:
        total += stage.params
        rows.append((stage.path, stage.kind, shape(stage.out_shape), count(stage.params), count(total)))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column >= 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    )
