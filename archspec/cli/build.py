"""``archspec build``: build the module a spec describes and report it."""

from __future__ import annotations

import click

from archspec.cli.options import (
    extends_option,
    spec_source,
    count,
    guard_options,
    memory_limit,
    overrides_option,
    shape,
    spec_argument,
)
import archspec


@click.command("build")
@spec_argument
@overrides_option
@extends_option
@click.option("--print-spec", is_flag=True,
              help="Print the resolved spec (after extends, defaults and --set) as YAML.")
@click.option("--weights", type=click.Path(), metavar="FILE",
              help="Load a state dict strictly: .pt/.pth (weights_only) or .safetensors.")
@click.option("--skip-head", is_flag=True,
              help="Fine-tuning: load everything but the output layer strictly; the file's output layer is skipped.")
@click.option("--summary", is_flag=True, help="Print torchinfo's table of the network.")
@click.option("--depth", type=click.IntRange(min=0), default=3, show_default=True,
              help="Nesting depth of the summary table.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size of the input used for the summary and the memory check.")
@guard_options
def command(spec: str, overrides: tuple[str, ...], allow_extends_outside: bool, print_spec: bool,
            weights: str | None, skip_head: bool,
            summary: bool, depth: int, batch_size: int, max_params: int, max_memory: str | None) -> None:
    """Build SPEC into a torch module and print its parameters and output shape.

    With --print-spec, standard output holds the resolved spec and nothing else.
    """
    spec, overrides = spec_source(spec, overrides, allow_extends_outside)
    resolved = archspec.load_spec(spec, overrides)
    model = archspec.build(
        resolved, batch_size=batch_size, max_params=max_params, max_memory=memory_limit(max_memory)
    )
    if skip_head and weights is None:
        raise archspec.SpecError(archspec.Problem("needs --weights FILE", option="--skip-head"))
    if weights is not None:
        archspec.load_weights(model, weights, skip_head=skip_head)
        # Every tensor of the network came from the file, but a skipped head's. With
        # --print-spec, stdout holds only the spec.
        state = model.state_dict()
        fresh = [name for name in state if skip_head and name.split(".", 1)[0] == model.output_name]
        params = sum(p.numel() for name, p in model.named_parameters() if name not in fresh)
        click.echo(f"loaded {weights}: {len(state) - len(fresh)} tensors, {count(params)} parameters", err=print_spec)
        if skip_head:
            kept = f"; {', '.join(fresh)} stay freshly initialised" if fresh else " (this network has no output layer)"
            click.echo(f"skipped the file's {', '.join(model.skipped_keys) or 'output layer: it had none'}{kept}",
                       err=print_spec)
    if print_spec:
        click.echo(archspec.spec_yaml(resolved), nl=False)
        return
    params = sum(p.numel() for p in model.parameters())
    result = archspec.static_pass(resolved)
    if summary:
        click.echo(archspec.summary(resolved, model=model, depth=depth, batch_size=batch_size))
    outputs = ", ".join(f"{output.name} {shape((batch_size, *output.shape))}" for output in result.outputs)
    click.echo(
        f"{resolved.name}: {count(params)} parameters, input {shape((batch_size, *result.input_shape))}"
        + (f" -> outputs {outputs}" if result.named else f" -> output {shape((batch_size, *result.out_shape))}")
    )
