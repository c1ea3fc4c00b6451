"""``archspec fit``: how much memory training a spec takes, and the largest batch that fits."""

from __future__ import annotations

import sys

import click

import archspec
from archspec import OPTIMIZER_STATE, format_bytes
from archspec.cli.options import extends_option, overrides_option, progress, spec_argument, spec_source

EXIT_DOES_NOT_FIT = 1
"""Neither mode fits batch 1 in --memory: the answer is no, as a failed verification is (docs/cli.md)."""


@click.command("fit")
@spec_argument
@overrides_option
@extends_option
@click.option("--memory", "memory", required=True, metavar="SIZE",
              help="Memory available for training, e.g. 4GiB, 2GB or 512MiB.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size the breakdown and --measure use.")
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZER_STATE)), default="sgd",
              show_default=True, help="Optimizer whose state is counted (momentum: SGD with momentum).")
@click.option("--measure", is_flag=True,
              help="Also run one real training step per mode in a subprocess and compare.")
def command(
    spec: str, overrides: tuple[str, ...], allow_extends_outside: bool, memory: str, batch_size: int, optimizer: str, measure: bool
) -> None:
    """Estimate the training memory of SPEC and the largest batch that fits in --memory."""
    spec, overrides = spec_source(spec, overrides, allow_extends_outside)
    budget = archspec.parse_bytes(memory, option="--memory")
    resolved = archspec.load_spec(spec, overrides)
    fits = archspec.fit(resolved, budget=budget, optimizer=optimizer)
    click.echo(f"{resolved.name}: training memory at batch {batch_size} with {optimizer}")
    rows = [
        ("parameters", [f.estimate.parameters for f in fits]),
        ("gradients", [f.estimate.gradients for f in fits]),
        ("optimizer state", [f.estimate.optimizer_state for f in fits]),
        ("activations", [batch_size * f.estimate.activations_per_sample for f in fits]),
        ("backward working", [batch_size * f.estimate.working_per_sample for f in fits]),
        ("total", [f.estimate.total(batch_size) for f in fits]),
    ]
    click.echo(f"{'':<18}{'naive':>14}{'memory_efficient':>18}")
    for label, sizes in rows:
        click.echo(f"{label:<18}{format_bytes(sizes[0]):>14}{format_bytes(sizes[1]):>18}")
    for found in fits:
        largest = found.largest_batch or f"none (batch 1 needs {format_bytes(found.estimate.total(1))})"
        click.echo(f"largest batch in {format_bytes(budget)} ({found.mode}): {largest}")
    if measure:
        devices = set()
        for found in fits:
            with progress() as status:  # a spinner on a terminal: each step takes seconds to minutes
                status(f"measuring one {found.mode} training step at batch {batch_size} in a fresh process")
                measured = archspec.measure_step(resolved, mode=found.mode, batch_size=batch_size,
                                                 optimizer=optimizer)
            estimated = found.estimate.total(batch_size)
            devices.add(measured.device)
            click.echo(
                f"{found.mode}: estimate {format_bytes(estimated)}, measured "
                f"{format_bytes(measured.peak)} ({(estimated - measured.peak) / measured.peak:+.0%})"
                f" on {measured.device}"
            )
        if "cuda" in devices:
            # Measured on an H100: 40-200 MiB (docs/diagram-and-fit.md, Accuracy).
            click.echo("on cuda the measured peak includes the workspaces cuDNN and cuBLAS allocate, "
                       "which the estimate leaves out: leave about 200 MiB for them")
    if not any(found.largest_batch for found in fits):
        click.echo(f"error: {resolved.name} does not fit in {format_bytes(budget)} at batch 1 in either mode",
                   err=True)
        sys.exit(EXIT_DOES_NOT_FIT)
