"""``archspec export``: write a verified ONNX file; exit 0 ok, 1 verification failed, 2 bad input."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

import archspec
from archspec import FP32_TOLERANCE, ExportReport, Problem, SpecError, Tolerance, VerificationError
from archspec.cli.options import (
    extends_option,
    spec_source,
    EXIT_VERIFICATION_FAILED,
    guard_options,
    memory_limit,
    overrides_option,
    progress,
    spec_argument,
)

def _echo_report(report: ExportReport) -> None:
    fallback = f" (fallback: {report.exporter_fallback_reason})" if report.exporter_fallback_reason else ""
    precision = "" if report.precision == "fp32" else f", {report.precision}"
    click.echo(
        f"wrote {report.output}: {report.file_bytes / 1e6:.1f} MB, {report.params:,} parameters, "
        f"opset {report.opset}, {report.exporter} exporter{fallback}{precision}"
    )
    dims = ", ".join(str(d) for d in report.input_shape)
    click.echo(f"{report.input_name} ({dims}) -> {', '.join(report.output_names)}")
    verification = report.verification
    if verification is None:
        click.echo("not verified (--no-verify)")
        return
    provider = verification.providers[0]
    why = f" ({verification.cuda_unused_reason})" if verification.cuda_unused_reason else ""
    graph = "fp32 graph " if report.deployment is not None else ""  # the file written is converted from it
    click.echo(
        f"{graph}verified on {provider}{why}, rtol {verification.tolerance.rtol:g}, "
        f"atol {verification.tolerance.atol:g}:"
    )
    for case in verification.cases:
        click.echo(f"  {case.describe()}")
    for provider in dict.fromkeys(latency.provider for latency in verification.latency):
        timed = [latency for latency in verification.latency if latency.provider == provider]
        click.echo(f"{graph}latency on {provider}: {', '.join(latency.describe() for latency in timed)}")
    if report.random_state is not None:
        click.echo(f"{graph}{report.random_state.describe()}")
    for check in report.runtimes:
        click.echo(f"{graph}{check.describe()}")
    deployment = report.deployment
    if deployment is not None:
        baked = " (preprocess baked in)" if deployment.preprocess_baked else ""
        click.echo(f"{deployment.precision} file{baked} checked against the fp32 module on {deployment.providers[0]}, "
                   f"{deployment.tolerance.describe()}, inputs {deployment.inputs}:")
        for case in deployment.cases:
            click.echo(f"  {case.describe()}")
        if deployment.speed is not None:
            for line in deployment.speed.lines(deployment.precision):
                click.echo(line)


@click.command("export")
@spec_argument
@click.option("--onnx", "out", type=click.Path(), metavar="OUT",
              help="Where to write the .onnx file (its directory must exist).")
@click.option("--format", "format_name", type=click.Choice(archspec.EXPORT_FORMATS), default="onnx",
              show_default=True, help="Deployment format (docs/deployment.md); each needs its extra.")
@click.option("-o", "--output", type=click.Path(), metavar="OUT", help="Where to write the file, in any format.")
@click.option("--write-unverified", is_flag=True,
              help="Write a file whose runtime cannot run here (Core ML off macOS), unverified.")
@click.option("--weights", type=click.Path(), metavar="FILE",
              help="State dict to load first: .pt/.pth (weights_only) or .safetensors.")
@click.option("--skip-head", is_flag=True,
              help="Fine-tuning: load --weights but the output layer, which stays freshly initialised.")
@click.option("--opset", type=int, help="ONNX opset, written exactly: 13 up to the newest the installed onnx "
              "defines (default 20).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="The larger verification batch; the fixed batch with --static.")
@click.option("--static", is_flag=True, help="Fix batch, height and width instead of leaving them dynamic.")
@click.option("--provider", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="onnxruntime execution provider for verification.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance (default 1e-3).")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance (default 1e-4).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="REPORT.json",
              help="Write the whole report as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option("--exporter", type=click.Choice(["archspec", "torch"]), default="archspec", show_default=True,
              help="archspec: write the graph from the spec; torch: torch.onnx.export (dynamo, then TorchScript).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16: weights and compute in half precision; int8: static quantization (needs --calibration).")
@click.option("--calibration", type=click.Path(), metavar="FILE.npy",
              help="int8: inputs to calibrate and check on, an array (N, *input shape) as the file takes them.")
@click.option("--io", "io", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: the file's input and output are float16 too.")
@click.option("--bake-preprocess", is_flag=True,
              help="Put the spec's preprocess mean and std into the graph: the file takes input in [0, 1].")
@click.option("--verify-with", "verify_with", metavar="RUNTIMES",
              help="Also verify in these runtimes, comma-separated: opencv, openvino, onnx2torch "
              "(pip install 'archspec[runtimes]').")
@guard_options
@overrides_option
@extends_option
def command(spec: str, out: str | None, format_name: str, output: str | None, write_unverified: bool, weights: str | None, skip_head: bool, opset: int | None, batch_size: int,
            static: bool, provider: str, rtol: float | None, atol: float | None,
            report_path: str | None, no_verify: bool, exporter: str, precision: str, calibration: str | None,
            io: str, bake_preprocess: bool, verify_with: str | None, max_params: int, max_memory: str | None,
            overrides: tuple[str, ...], allow_extends_outside: bool) -> None:
    """Export SPEC to an ONNX file (or --format) and verify it in its runtime."""
    spec, overrides = spec_source(spec, overrides, allow_extends_outside)
    from archspec.cli.export_format import export_in_format, output_path

    out = output_path(format_name, out, output)
    if format_name != "onnx":
        export_in_format(spec, out, format_name, weights=weights, skip_head=skip_head, precision=precision, write_unverified=write_unverified,
                         batch_size=batch_size, report_path=report_path, max_params=max_params,
                         max_memory=memory_limit(max_memory), overrides=overrides,
                         onnx_only={"--opset": opset is not None, "--static": static, "--provider": provider != "auto",
                                    "--rtol": rtol is not None, "--atol": atol is not None, "--no-verify": no_verify,
                                    "--exporter": exporter != "archspec", "--calibration": calibration is not None,
                                    "--io": io != "fp32", "--bake-preprocess": bake_preprocess,
                                    "--verify-with": verify_with is not None})
        return
    tolerance = Tolerance(
        rtol=FP32_TOLERANCE.rtol if rtol is None else rtol,
        atol=FP32_TOLERANCE.atol if atol is None else atol,
    )
    if report_path is not None and not Path(report_path).parent.is_dir():
        raise SpecError(Problem("report directory does not exist", file=report_path))
    with progress() as step:
        try:
            report = archspec.export_onnx(
                spec, out, overrides=overrides, weights=weights, skip_head=skip_head, opset=opset,
                batch_size=batch_size, static=static, provider=provider,
                tolerance=tolerance, verify=not no_verify, progress=step,
                max_params=max_params, max_memory=memory_limit(max_memory), exporter=exporter,
                precision=precision, calibration=calibration, io_fp16=io == "fp16",
                bake_preprocess=bake_preprocess,
                verify_with=tuple(name.strip() for name in (verify_with or "").split(",") if name.strip()),
                report=report_path,
            )
        except VerificationError as error:
            failure: VerificationError | None = error
        else:
            failure = None
    if failure is not None:  # its report, if asked for, is written
        click.echo(f"error: {failure}; nothing written to {out}", err=True)
        sys.exit(EXIT_VERIFICATION_FAILED)
    _echo_report(report)
