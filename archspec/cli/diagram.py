"""``archspec diagram``: draw a spec's parts and its channels through depth, without torch."""

from __future__ import annotations

import click

import archspec
from archspec.cli.options import extends_option, overrides_option, spec_argument, spec_source


@click.command("diagram")
@spec_argument
@overrides_option
@extends_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the picture: FILE.svg or FILE.png.")
def command(spec: str, overrides: tuple[str, ...], allow_extends_outside: bool, output: str) -> None:
    """Draw SPEC as a diagram (one box per part, channel count through depth) to FILE."""
    spec, overrides = spec_source(spec, overrides, allow_extends_outside)
    name = archspec.load_spec(spec, overrides).name
    # The path, not the loaded spec: the output is checked against the files it was read from.
    click.echo(f"{name}: wrote {archspec.diagram(spec, output, overrides=overrides)}")
