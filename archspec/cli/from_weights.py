"""``archspec from-weights``: write the spec whose network takes a checkpoint strictly."""

from __future__ import annotations

import click

import archspec
from archspec.atomic import atomic_output


@click.command("from-weights")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="SPEC",
              help="Where to write the recovered spec (YAML).")
def command(checkpoint: str, output: str) -> None:
    """Recover a spec from CHECKPOINT's tensor shapes (torchvision, timm or MONAI key names).

    Values a checkpoint cannot tell (input size, strides, pooling, activation) are written
    as defaults with a comment beside them. Nothing is written if CHECKPOINT is refused.
    """
    text = archspec.spec_from_weights(checkpoint)
    with atomic_output(output) as temporary:
        temporary.write_text(text, encoding="utf-8")
    click.echo(f"{checkpoint}: wrote {output}")
