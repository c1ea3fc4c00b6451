"""The ``archspec`` command: a thin layer that parses arguments, calls the API and prints.

Bad input of any kind ends as one line on stderr and exit status 2, work that
failed on a valid input as one line and exit status 1; no traceback reaches the
user. A signal (SIGINT, SIGTERM, SIGHUP) ends a command with 128 + its number, one
line, and no new file (archspec/interrupts.py). Each command lives in its own module
and calls only the public API.
"""

from __future__ import annotations

import sys
from typing import Any

import click

import archspec
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
            if not archspec.command_started():  # a program calling main(): its own Ctrl-C
                click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)  # with the handlers, main() below says which signal

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command; as the ``archspec`` process, exit with ``archspec.end_command``'s status."""
        if not archspec.begin_command():
            return super().main(*args, **kwargs)
        status: Any
        try:
            status = super().main(*args, **kwargs)
        except SystemExit as done:
            status = done.code
        except KeyboardInterrupt:  # raised outside invoke (while click parsed the arguments)
            status = EXIT_INTERRUPTED
        sys.exit(archspec.end_command(status or 0))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archspec")
def main() -> None:
    """Declarative DenseNet architectures: validate, build, summarise, export."""


def _register_commands() -> None:
    from archspec.cli import benchmark, build, diagram, export, fit, from_weights, schema, validate

    for module in (benchmark, build, diagram, export, fit, from_weights, schema, validate):
        main.add_command(module.command)


_register_commands()
