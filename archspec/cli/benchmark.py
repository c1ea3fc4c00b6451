"""``archspec benchmark``: every deployment format written, proven and timed here, in one table."""

from __future__ import annotations

import json
import sys

import click

import archspec
from archspec import VerificationError
from archspec.cli.options import EXIT_VERIFICATION_FAILED, extends_option, progress, spec_source
from archspec.cli.options import overrides_option, spec_argument


def _size(value: int | None) -> str:
    return "" if value is None else f"{value / 1e6:.2f} MB"


@click.command("benchmark")
@spec_argument
@click.option("--formats", metavar="FORMATS",
              help=f"Comma-separated formats (default all: {', '.join(archspec.EXPORT_FORMATS)}).")
@click.option("--weights", type=click.Path(), metavar="FILE",
              help="State dict to load (default: a fresh network with seeded random norm state).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=4, show_default=True,
              help="The larger batch timed (batch 1 is always timed).")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs per batch after one warm-up; the median is shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@overrides_option
@extends_option
def command(spec: str, formats: str | None, weights: str | None, precision: str, batch_size: int, rounds: int,
            as_json: bool, overrides: tuple[str, ...], allow_extends_outside: bool) -> None:
    """Write SPEC in every format this machine can run, verify each, and time it."""
    spec, overrides = spec_source(spec, overrides, allow_extends_outside)
    names = tuple(name.strip() for name in (formats or "").split(",") if name.strip())
    with progress() as step:
        try:
            report = archspec.benchmark(spec, formats=names, overrides=overrides, weights=weights,
                                        precision=precision, batch_size=batch_size, rounds=rounds, progress=step)
        except VerificationError as error:
            failure: VerificationError | None = error
        else:
            failure = None
    if failure is not None:
        click.echo(f"error: {failure}", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    batches = report.batches
    header = ["format", "precision", "file", "max error", *(f"batch {b} ms" for b in batches)]
    rows = [[row.format, row.precision, _size(row.file_bytes),
             "" if row.max_relative_error is None else f"{row.max_relative_error:.1e}",
             *("" if row.milliseconds is None or b not in row.milliseconds else f"{row.milliseconds[b]:.1f}"
               for b in batches)]
            for row in report.rows if row.skipped is None]
    click.echo(f"{report.spec_name}, weights {report.weights}; max error relative to the largest output; "
               f"median of {report.rounds} runs")
    click.echo("| " + " | ".join(header) + " |")
    click.echo("|" + "|".join("---" for _ in header) + "|")
    for cells in rows:
        click.echo("| " + " | ".join(cells) + " |")
    for row in report.rows:
        if row.failed is not None:
            click.echo(f"{row.format}: FAILED here: {row.failed}")
    for row in report.rows:
        if row.skipped is not None:
            click.echo(f"{row.format}: not run here: {row.skipped}")
