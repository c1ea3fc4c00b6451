"""``archspec export --format FORMAT -o OUT``: the deployment formats beyond ONNX (``export.py`` has ONNX)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import click

import archspec
from archspec import Problem, SpecError, VerificationError
from archspec.cli.options import EXIT_VERIFICATION_FAILED, progress


def output_path(format_name: str, onnx: str | None, output: str | None) -> str:
    """The one output path: ``-o OUT`` in any format, ``--onnx OUT`` for ONNX only.

    Raises:
        SpecError: none given, both given, or ``--onnx`` with another format.
    """
    if onnx is not None and output is not None:
        raise SpecError(Problem("give the output once: -o OUT (--onnx OUT is the same for ONNX)", option="--onnx"))
    if onnx is not None and format_name != "onnx":
        raise SpecError(Problem(f"--onnx writes ONNX; for --format {format_name} name the file with -o OUT",
                                option="--onnx"))
    out = output or onnx
    if out is None:
        raise SpecError(Problem("no output: -o OUT (or --onnx OUT)", option="-o"))
    return out


def export_in_format(spec: str, out: str, format_name: str, *, weights: str | None, skip_head: bool, precision: str,
                     write_unverified: bool, batch_size: int, report_path: str | None, max_params: int,
                     max_memory: int | None, overrides: tuple[str, ...], onnx_only: Mapping[str, bool]) -> None:
    """Export, print the report, exit 1 with one line when the file does not match PyTorch."""
    given = [option for option, used in onnx_only.items() if used]
    if given:
        raise SpecError(Problem(f"applies to ONNX files only, not --format {format_name}", option=given[0]))
    source = click.get_current_context().get_parameter_source("batch_size")
    with progress() as step:
        try:
            report = archspec.export(
                spec, out, format=format_name, overrides=overrides, weights=weights, skip_head=skip_head,
                precision=precision,
                batch_size=None if source == click.core.ParameterSource.DEFAULT else batch_size,
                write_unverified=write_unverified, progress=step, max_params=max_params,
                max_memory=max_memory, report=report_path)
        except VerificationError as error:
            failure: VerificationError | None = error
        else:
            failure = None
    if failure is not None:
        click.echo(f"error: {failure}; nothing written to {out}", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)
    size = f"{report.file_bytes / 1e6:.1f} MB"
    files = f" (with {', '.join(report.files[1:])})" if len(report.files) > 1 else ""
    click.echo(f"wrote {report.output}{files}: {size}, {report.params:,} parameters, {report.format}, {report.precision}")
    dims = ", ".join(str(d) for d in report.input_shape)
    fixed = f"; {report.fixed_shapes} fixed by the format" if report.fixed_shapes else ""
    click.echo(f"input ({dims}){fixed}")
    for check, what in ((report.verification, ""), (report.random_state, " with seeded random norm statistics, "
                                                     f"affine values and biases ({report.initial_values} held "
                                                     "their initial values)")):
        if check is None:
            continue
        click.echo(f"verified in {check.runtime} ({check.version}){what}, max error ≤ {check.tolerance:g} "
                   f"of the largest output:")
        for case in check.cases:
            click.echo(f"  {case.describe()}")
    if report.verification is not None and report.verification.latency:
        timed = ", ".join(f"batch {t.batch} {t.milliseconds:.1f} ms" for t in report.verification.latency)
        click.echo(f"latency in {report.verification.runtime}: {timed}")
    if report.not_run is not None:
        click.echo(f"NOT VERIFIED: {report.not_run}; the file was written (--write-unverified) but never run")
