"""``archspec schema``: print the JSON Schema of the spec format (no torch)."""

from __future__ import annotations

import click

import archspec


@click.command("schema")
def command() -> None:
    """Print the JSON Schema of spec files.

    The same text is committed as docs/archspec.schema.json; point editors at it.
    """
    click.echo(archspec.json_schema_text(), nl=False)
