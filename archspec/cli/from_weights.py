"""``archspec from-weights``: write the spec whose network takes a checkpoint strictly."""

from __future__ import annotations

import click

import archspec


@click.command("from-weights")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="SPEC",
              help="Where to write the recovered spec (YAML).")
def command(checkpoint: str, output: str) -> None:
    """Recover a spec from CHECKPOINT's tensor shapes (torchvision, timm or MONAI key names).

    Values a checkpoint cannot tell (input size, strides, pooling, activation) are guessed,
    and the spec lists every guess in one comment block at its top. Nothing is written if
    CHECKPOINT is refused.
    """
    archspec.spec_from_weights(checkpoint, out=output)
    click.echo(f"{checkpoint}: wrote {output}")
