"""Spec → one file in a deployment format, proven in that format's runtime, written atomically.

The file is converted into a private folder beside the output, run in its runtime against the
PyTorch module on the format's cases (``verify.cases_for``), and, when the module's norms and
biases hold their initial values, converted and run again from a copy with seeded random ones.
Only then are its files renamed over the outputs, all together (``archspec.atomic.replacing``):
an error, a failed verification or Ctrl-C leaves nothing at the output paths.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from archspec import __version__
from archspec.atomic import Named, atomic_output, check_outputs, replacing, write_text
from archspec.builder import build_module
from archspec.errors import Problem, RunError, SpecError, first_line
from archspec.exporters.formats.registry import (
    Format,
    check_expresses,
    check_installed,
    check_precision,
    get,
)
from archspec.exporters.formats.report import FormatCheck, FormatReport
from archspec.exporters.formats.verify import cases_for, check
from archspec.exporters.random_state import RANDOM_STATE_SEED, initial_values, randomize_state
from archspec.exporters.report import VerificationError
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, static_pass
from archspec.weights import load_weights

_EXAMPLE_SEED = 0  # the converters' tracing example; the verification inputs have seeds of their own
_SPATIAL_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
DYNAMIC_BATCH = 4  # the larger verification batch when the batch stays free (as ONNX)
FIXED_BATCH = 1  # the batch a fixed-shape file takes unless asked: what a phone or a device runs


@dataclass(frozen=True)
class FormatOptions:
    """What ``archspec.export`` was asked for, beyond the spec and the paths."""

    format: str
    precision: str = "fp32"
    batch_size: int | None = None
    """The larger verification batch when the batch stays free (default 4), else the file's fixed
    batch (default 1)."""
    write_unverified: bool = False
    """Write the file even where its runtime cannot run here (Core ML off macOS), saying so."""

    def batch(self, fmt: Format) -> int:
        if fmt.dynamic_batch:
            return max(self.batch_size or DYNAMIC_BATCH, 2)  # batch 1 would be specialised
        return self.batch_size or FIXED_BATCH


def settle(result: StaticPass, options: FormatOptions) -> Format:
    """Every refusal that comes before building the network, each one line.

    Raises:
        SpecError: an unknown format or a precision it lacks; an input it cannot express (at the
            spec's ``input``); its converter not installed (naming the extra); no way to write it
            here (TensorRT without a GPU); or its runtime cannot run here and ``write_unverified``
            was not given.
    """
    fmt = get(options.format)
    check_precision(fmt, options.precision)
    check_expresses(fmt, len(result.input_shape) - 1)
    check_installed(fmt)
    implementation = fmt.implementation()
    unwritable = getattr(implementation, "not_writable", lambda: None)()
    if unwritable is not None:
        raise SpecError(Problem(f"{unwritable}; no {fmt.name} file can be written on this machine",
                                option="--format"))
    unrunnable = implementation.not_runnable()
    if unrunnable is not None and not options.write_unverified:
        raise SpecError(Problem(f"{unrunnable}, so the {fmt.name} file cannot be verified here; "
                                f"--write-unverified writes it without running it", option="--format"))
    return fmt


def outputs_of(fmt: Format, out: str | Path) -> list[Path]:
    """The output and the files the format writes beside it (``x.xml`` → ``x.xml``, ``x.bin``).

    Raises:
        SpecError: a format of several files whose output does not end in its suffix (its runtime
            finds the siblings by the name).
    """
    out = Path(out)
    if fmt.siblings and out.suffix != fmt.suffix:
        raise SpecError(Problem(f"a {fmt.name} output ends in {fmt.suffix}: its runtime finds "
                                f"{', '.join(fmt.siblings)} beside it by name", file=str(out)))
    return [out, *(out.with_suffix(suffix) for suffix in fmt.siblings)]


def _free_axes(fmt: Format, result: StaticPass) -> dict[int, str]:
    spatial = _SPATIAL_AXES.get(len(result.input_shape) - 1, ()) if fmt.dynamic_spatial else ()
    return {**({0: "batch"} if fmt.dynamic_batch else {}), **{2 + i: name for i, name in enumerate(spatial)}}


def _convert(fmt: Format, module: torch.nn.Module, example: torch.Tensor, path: Path, *, precision: str,
             dynamic: dict[int, str], max_batch: int) -> tuple[int | str, ...]:
    try:
        return fmt.implementation().write(module, example, path, precision=precision, dynamic=dynamic,
                                          max_batch=max_batch)
    except (SpecError, RunError):
        raise
    except Exception as error:  # each converter raises its own types
        raise RunError(f"the {fmt.name} converter failed: {first_line(error)}") from None


def _run(fmt: Format, path: Path, module: torch.nn.Module, result: StaticPass, spec: Spec, options: FormatOptions,
         progress: Callable[[str], None]) -> FormatCheck:
    implementation = fmt.implementation()
    progress(f"loading the file in {fmt.runtime}")
    try:
        run = implementation.runner(path, precision=options.precision)
    except Exception as error:  # the runtime's own types for a file it cannot load
        return FormatCheck(fmt.runtime, implementation.version(), fmt.tolerance[options.precision], (),
                           error=f"{fmt.runtime} could not load the file: {first_line(error)}")
    return check(fmt, run, module, cases_for(fmt, spec, result, options.batch(fmt)), precision=options.precision,
                 version=implementation.version(), progress=progress)


def export_format(spec: Spec, out: str | Path, options: FormatOptions, *, weights: str | Path | None = None,
                  skip_head: bool = False,
                  inputs: Sequence[Named] = (), report: str | Path | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> FormatReport:
    """Write ``spec``'s network to ``out`` in ``options.format`` and prove it in that format's runtime.

    ``settle`` must have accepted the options. See ``archspec.export`` for the arguments.

    Raises:
        SpecError: bad weights or output paths.
        RunError: the converter failed.
        VerificationError: the file does not match PyTorch; nothing is left at the outputs.
    """
    fmt = get(options.format)
    implementation = fmt.implementation()
    targets = outputs_of(fmt, out)
    check_outputs([*targets, *([] if report is None else [report])], inputs=inputs)
    result = static_pass(spec)
    batch = options.batch(fmt)
    progress("building the network")
    module = build_module(result)
    if weights is not None:
        load_weights(module, weights, skip_head=skip_head)
    module.eval()
    dynamic = _free_axes(fmt, result)
    example = torch.randn((batch, *result.input_shape), generator=torch.Generator().manual_seed(_EXAMPLE_SEED))
    not_run = implementation.not_runnable()
    held = initial_values(module)
    with tempfile.TemporaryDirectory(dir=targets[0].parent, prefix=f".{targets[0].name}.") as work:
        staged = Path(work) / f"model{fmt.suffix}"
        progress(f"converting to {fmt.name}")
        dims = _convert(fmt, module, example, staged, precision=options.precision, dynamic=dynamic, max_batch=batch)
        files = [staged, *(staged.with_suffix(suffix) for suffix in fmt.siblings)]
        verification = random_state = None
        if not_run is None:
            verification = _run(fmt, staged, module, result, spec, options, progress)
            if verification.passed and held is not None:
                # A fresh norm is an identity: convert a copy with random state too, and prove that.
                progress("converting and verifying again with seeded random norm statistics and biases")
                randomized = randomize_state(copy.deepcopy(module), RANDOM_STATE_SEED).eval()
                again = Path(work) / "random" / staged.name
                again.parent.mkdir()
                _convert(fmt, randomized, example, again, precision=options.precision, dynamic=dynamic,
                         max_batch=batch)
                random_state = _run(fmt, again, randomized, result, spec, options, progress)
        fixed = [name for name, free in (("batch", fmt.dynamic_batch), ("spatial size", fmt.dynamic_spatial))
                 if not free and (name == "batch" or len(result.input_shape) > 1)]
        done = FormatReport(
            format=fmt.name, spec_name=spec.name, output=str(targets[0]), files=tuple(map(str, targets)),
            params=sum(p.numel() for p in module.parameters()), weights=None if weights is None else str(weights),
            precision=options.precision, input_shape=dims, fixed_shapes=" and ".join(fixed) or None,
            file_bytes=sum(file.stat().st_size for file in files),
            versions={"archspec": __version__, "torch": torch.__version__, fmt.name: implementation.version()},
            written=False, verification=verification, not_run=not_run, random_state=random_state,
            initial_values=held)
        if not done.passed:
            failed = verification if verification is not None and not verification.passed else random_state
            assert failed is not None
            what = "" if failed is verification else (" with seeded random norm statistics, affine values and "
                                                      f"biases ({held} held their initial values)")
            raise VerificationError(f"verification in {failed.runtime}{what} failed (max error ≤ "
                                    f"{failed.tolerance:g} of the largest output): {failed.worst()}", done)
        done = FormatReport(**{**done.__dict__, "written": True})
        with replacing([*targets, report], inputs=inputs):
            for source, target in zip(files, targets):
                with atomic_output(target) as temporary:
                    os.replace(source, temporary)
            if report is not None:
                write_text(report, done.to_json() + "\n")
    return done
