"""The ``archspec`` command: a thin layer that parses arguments, calls the API and prints.

Bad input of any kind ends as one line on stderr and exit status 2, work that
failed on a valid input as one line and exit status 1; no traceback reaches the
user. Each command lives in its own module and calls only the public API.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from archspec import RunError, SpecError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Main(click.Group):
    """Group that turns library errors into one line each and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as error:
            for problem in error.problems:
                click.echo(f"error: {problem}" if not problem.file else str(problem), err=True)
            sys.exit(EXIT_BAD_INPUT)
        except RunError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archspec")
def main() -> None:
    """Declarative DenseNet architectures: validate, build, summarise, export."""


def _register_commands() -> None:
    from archspec.cli import build, diagram, export, fit, from_weights, schema, validate

    for module in (build, diagram, export, fit, from_weights, schema, validate):
        main.add_command(module.command)


_register_commands()
