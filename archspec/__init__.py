"""archspec: declarative DenseNet-family architectures, built exactly and exported with proof.

The public API. torch is imported only by the functions that need it, so that
validating a spec stays fast.
"""

from __future__ import annotations

from archspec import interrupts as _interrupts

_interrupts.install_if_command()  # before the imports below, so a signal while they run ends the command cleanly

from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from archspec.errors import Problem, RunError, SpecError
from archspec.exporters.formats.registry import FORMAT_NAMES as EXPORT_FORMATS
from archspec.exporters.report import FP32_TOLERANCE, ExportReport, Tolerance, VerificationError
from archspec.format.dump import spec_yaml
from archspec.format.guard import DEFAULT_MAX_PARAMS, check_resources
from archspec.format.json_schema import json_schema_text
from archspec.format.load import load_spec, located_in
from archspec.format.memory import MODES, OPTIMIZER_STATE, MemoryEstimate
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, static_pass
from archspec.format.sizes import format_bytes, parse_bytes

if TYPE_CHECKING:
    from torch import nn

    from archspec.exporters.formats.benchmark import BenchmarkReport
    from archspec.exporters.formats.report import FormatReport
    from archspec.memory_fit import Measurement, ModeFit
    from archspec.network import Backbone, DenseNet

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "EXPORT_FORMATS",
    "FP32_TOLERANCE",
    "MODES",
    "OPTIMIZER_STATE",
    "ExportReport",
    "MemoryEstimate",
    "Problem",
    "RunError",
    "Spec",
    "SpecError",
    "StaticPass",
    "Tolerance",
    "VerificationError",
    "__version__",
    "begin_command",
    "benchmark",
    "build",
    "check_resources",
    "command_started",
    "diagram",
    "end_command",
    "export",
    "export_onnx",
    "fit",
    "format_bytes",
    "json_schema_text",
    "load_spec",
    "load_weights",
    "measure_step",
    "parse_bytes",
    "spec_from_weights",
    "spec_yaml",
    "static_pass",
    "summary",
]

SpecLike = Spec | str | Path | dict[str, Any]


def _as_spec(spec: SpecLike, overrides: tuple[str, ...] = ()) -> Spec:
    if isinstance(spec, Spec):
        if overrides:
            # What the user wrote, so that an override of `defaults` reaches every block
            # that inherits it, exactly as with a path.
            return load_spec(spec.model_dump(mode="json", exclude_unset=True), overrides)
        return spec
    return load_spec(spec, overrides)


def _inputs(spec: SpecLike | None, *paths: tuple[str, str | Path | None]) -> list[tuple[str, str | Path]]:
    """Every file a command reads: a spec file and the files it extends, then ``paths``.

    Outputs are checked against these (``archspec.atomic``), and each path is refused by
    kind (a FIFO, a device) before anything opens it.
    """
    from archspec.format.load import load_document
    from archspec.format.paths import refuse_special_file

    named = [(what, path) for what, path in paths if path is not None]
    for what, path in named:
        refuse_special_file(path, what)
    if not isinstance(spec, (str, Path)):  # a Spec or a mapping: no file
        return named
    # The spec loaded already, under the caller's rule for where bases may lie: read again for
    # where its values came from (the same chain, so the rule need not be repeated).
    document = load_document(spec, allow_extends_outside=True)
    files = {where.file for where in (*document.values.values(), *document.keys.values()) if where.file}
    return [("spec", spec), *(("extended spec", file) for file in sorted(files - {str(spec)})), *named]


def build(
    spec: SpecLike,
    *,
    overrides: tuple[str, ...] = (),
    batch_size: int = 1,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_memory: int | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> DenseNet | Backbone:
    """Build the ``torch.nn.Module`` a spec describes, freshly initialised.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        overrides: ``PATH=VALUE`` assignments applied before validation.
        batch_size: batch the resource guard checks a forward pass at.
        max_params: most parameters the resource guard allows (default 2×10⁹).
        max_memory: most bytes the parameters and a forward pass at ``batch_size``
            may take; ``None``: this machine's physical memory.
        features_only: return timm's ``features_only`` network instead: a list of feature maps
            (the stem's activation, each dense block's output at a new stride, the head's
            activation), with ``feature_info`` (``channels()``, ``reduction()``, ``module_name()``).
        out_indices: with ``features_only``, which maps (timm's meaning; ``None``: all).

    Returns:
        A ``DenseNet`` module with timm's surface (``num_features``, ``forward_features``,
        ``forward_head(x, pre_logits)``, ``get_classifier``, ``reset_classifier``,
        ``forward_intermediates``, ``feature_info``); with ``features_only``, a ``Backbone``.

    Raises:
        SpecError: the spec is invalid, exceeds a limit of the resource guard, or (with
            ``features_only``) has no feature maps or no map at one of ``out_indices``.
    """
    from archspec.builder import build_module
    from archspec.network import Backbone

    resolved = _as_spec(spec, overrides)
    result = static_pass(resolved)
    check_resources(resolved, batch_size=batch_size, max_params=max_params, max_memory=max_memory, result=result)
    if not features_only:
        return build_module(result)
    maps = len(result.feature_maps())
    wrong = [index for index in out_indices or () if not -maps <= index < maps]
    if wrong:
        raise SpecError(Problem(f"out_indices {wrong} outside the {maps} feature maps (0 to {maps - 1})",
                                option="out_indices"))
    return Backbone(build_module(result), out_indices)


def summary(
    spec: SpecLike,
    *,
    model: nn.Module | None = None,
    overrides: tuple[str, ...] = (),
    depth: int = 3,
    batch_size: int = 1,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_memory: int | None = None,
) -> str:
    """The torchinfo table of a spec's network, for the input size the spec declares.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        model: the network already built from ``spec`` (with its weights); built here if ``None``.
        overrides: ``PATH=VALUE`` assignments applied before validation.
        depth: how many levels of nested modules to show.
        batch_size: batch dimension of the summarised input.
        max_params: most parameters the resource guard allows (see ``build``).
        max_memory: most bytes the parameters and a forward pass at ``batch_size`` may take.

    Returns:
        The table as text.

    Raises:
        SpecError: the spec is invalid, or exceeds a limit of the resource guard.
    """
    from archspec.torchinfo_table import summarise

    resolved = _as_spec(spec, overrides)
    if model is None:
        model = build(resolved, batch_size=batch_size, max_params=max_params, max_memory=max_memory)
    return summarise(model, resolved, depth=depth, batch_size=batch_size)


def diagram(spec: SpecLike, out: str | Path, *, overrides: tuple[str, ...] = ()) -> Path:
    """Draw a spec's parts and its channels through depth to ``out`` (``.svg`` or ``.png``), without torch.

    Returns:
        The path written.

    Raises:
        SpecError: the spec is invalid, the extension is neither, or the file cannot be written.
    """
    from archspec.atomic import check_destination
    from archspec.drawing import write_diagram

    resolved = _as_spec(spec, overrides)
    check_destination(out, inputs=_inputs(spec))
    return write_diagram(resolved, out)


def fit(
    spec: SpecLike, *, budget: int, optimizer: str = "sgd", overrides: tuple[str, ...] = ()
) -> tuple[ModeFit, ...]:
    """Training-memory estimates in the naive and the memory-efficient mode against ``budget`` bytes.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        budget: memory available for training, in bytes.
        optimizer: ``sgd``, ``momentum`` or ``adam`` (its state per parameter is counted).
        overrides: ``PATH=VALUE`` assignments applied before validation.

    Returns:
        One ``ModeFit`` per mode, naive first: the estimate and the largest batch that fits.
    """
    from archspec.memory_fit import fit as estimate_fit

    return estimate_fit(_as_spec(spec, overrides), budget=budget, optimizer=optimizer)


def measure_step(spec: SpecLike, *, mode: str, batch_size: int, optimizer: str = "sgd") -> Measurement:
    """Run one real training step in a fresh process and measure its peak memory.

    Raises:
        SpecError: the spec is invalid or the step would not fit this machine.
        RunError: the step failed.
    """
    from archspec.memory_fit import measure

    return measure(_as_spec(spec), mode=mode, batch_size=batch_size, optimizer=optimizer)


def load_weights(model: nn.Module, path: str | Path, *, skip_head: bool = False) -> nn.Module:
    """Load a local weights file into a built network, strictly and safely.

    Args:
        model: the network from ``build``.
        path: a ``.pt``/``.pth`` state dict (read with ``torch.load(weights_only=True)``,
            so a pickle cannot run code) or a ``.safetensors`` file. torchvision DenseNet
            checkpoints load, including the old ``norm.1`` key style.
        skip_head: fine-tuning: everything but the output layer loads strictly, and the
            file's output layer (of any size, or none) is skipped; ``model.skipped_keys``
            lists what was. A ``features_only`` backbone takes a full checkpoint this way.

    Returns:
        ``model``, with the weights loaded in place.

    Raises:
        SpecError: the file cannot be read safely, or its keys, shapes or values do not
            fit; the problems list the first few missing/unexpected/mismatched keys and counts.
    """
    from archspec.weights import load_weights as load

    return load(model, path, skip_head=skip_head)


def spec_from_weights(path: str | Path, *, out: str | Path | None = None) -> str:
    """The spec whose network takes a DenseNet checkpoint strictly, recovered from its tensor shapes.

    Args:
        path: a ``.pt``/``.pth`` state dict (read with ``torch.load(weights_only=True)``)
            or a ``.safetensors`` file, with torchvision's, timm's or MONAI's key names.
        out: also write the spec there, atomically (nothing is written if the file is refused).

    Returns:
        The spec as YAML text. What shapes cannot tell (input size, strides, padding,
        pooling, activation, dropout) is a default with a comment saying so.

    Raises:
        SpecError: the file cannot be read safely, or it is not a DenseNet that a spec
            can describe; one line says why.
    """
    from archspec.atomic import check_destination, write_text
    from archspec.from_weights import spec_from_weights as recover

    inputs = _inputs(None, ("weights file", path))
    if out is not None:
        check_destination(out, inputs=inputs)
    text = recover(path)
    if out is not None:
        write_text(out, text)
    return text


def export_onnx(
    spec: SpecLike,
    out: str | Path,
    *,
    overrides: tuple[str, ...] = (),
    weights: str | Path | None = None,
    skip_head: bool = False,
    opset: int | None = None,
    batch_size: int = 4,
    static: bool = False,
    provider: str = "auto",
    tolerance: Tolerance | None = None,
    verify: bool = True,
    progress: Callable[[str], None] | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_memory: int | None = None,
    exporter: str = "archspec",
    precision: str = "fp32",
    calibration: str | Path | None = None,
    io_fp16: bool = False,
    bake_preprocess: bool = False,
    verify_with: tuple[str, ...] = (),
    report: str | Path | None = None,
) -> ExportReport:
    """Export a spec's network to one self-contained ONNX file and verify it under onnxruntime.

    The file is written atomically: on any error, failed verification or Ctrl-C,
    nothing is left at ``out`` (nor at ``report``, unless the verification failed).
    No output may be an input (the spec, a file it extends, ``weights``, ``calibration``)
    or the other output, or an existing file that is not a regular one.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        out: where the ``.onnx`` file goes; its directory must exist.
        overrides: ``PATH=VALUE`` assignments applied before validation.
        weights: a state dict file to load first (see ``load_weights``); none means fresh weights.
        skip_head: load ``weights`` but the output layer (fine-tuning; see ``load_weights``).
        opset: the ONNX opset the file is written at, exactly: 13 to the newest the
            installed onnx defines (with ``verify``, the newest onnxruntime runs); none means 20.
        batch_size: the larger verification batch when dynamic (at least 2), the
            fixed batch when ``static``.
        static: fix batch, height and width instead of leaving them dynamic.
        provider: ``auto`` (CUDA when it can run, else CPU), ``cuda`` or ``cpu``.
        tolerance: elementwise ``rtol``/``atol``; default ``FP32_TOLERANCE``.
        verify: run and compare the file under onnxruntime before keeping it.
        progress: called with a short description as each long step starts.
        max_params: most parameters the resource guard allows (default 2×10⁹).
        max_memory: most bytes the parameters and a forward pass at the larger
            verification batch may take; ``None``: this machine's physical memory.
        exporter: ``archspec`` writes the graph from the spec; ``torch`` uses
            ``torch.onnx.export`` (dynamo, then TorchScript if that fails).
        precision: ``fp32``; ``fp16`` (weights and compute, onnxruntime's converter) or
            ``int8`` (onnxruntime's static QDQ quantization, per-channel weights), made from
            the verified fp32 graph and checked against the fp32 module with their own
            tolerance (docs/deployment.md).
        calibration: int8 only, and required there: a ``.npy`` array ``(N, *input shape)``
            of inputs as the file takes them; the check reports agreement on them.
        io_fp16: fp16 only: the file's input and output are float16 too (default float32).
        bake_preprocess: put the spec's ``preprocess`` mean and std into the graph, so the
            file takes unnormalised input (pixels in [0, 1]). Every file whose spec has a
            ``preprocess`` carries it as JSON in the metadata key ``archspec.preprocess``.
        verify_with: other runtimes to run the fp32 graph in after onnxruntime, on the same
            cases and tolerance: ``opencv``, ``openvino`` (at f32), ``onnx2torch``; each
            needs its package (``pip install 'archspec[runtimes]'``).
        report: also write the report there as JSON; with ``out``, both files or neither,
            except that a failed verification writes its report (and no ONNX file).

    Returns:
        The ``ExportReport``: exporter, opset, input dims, file size, versions, every
        verification case's max abs and rel error, and onnxruntime's milliseconds per
        batch at batch 1 and the larger batch; for fp16, int8 or a baked file, its
        ``precision`` and the ``deployment`` check (tolerance, errors, top-1 agreement);
        ``runtimes``: each ``verify_with`` runtime's cases and errors.
        ``to_json()`` serialises it.

    Raises:
        SpecError: bad spec, override, weights, output path, provider, opset or exporter,
            or a spec over the resource guard's limits (see ``build``); int8 without
            calibration inputs, a bad calibration array, an option that does not apply to
            the precision, nothing to bake, or fp16 overflow; a ``verify_with`` runtime
            that is unknown, not installed, or known not to run a part of the network
            (``body[0].norm``: OpenCV's group and instance norms on 1D or 3D input),
            checked before the export starts.
        VerificationError: the file does not match PyTorch (``.report`` has the numbers).
        RunError: the exporter itself failed (the torch exporter, or one that wrote
            another opset than the one asked for).
    """
    from archspec.atomic import replacing, write_text
    from archspec.exporters.onnx import export_onnx as export

    resolved = _as_spec(spec, overrides)
    inputs = _inputs(spec, ("weights file", weights), ("calibration array", calibration))
    outputs = [out] if report is None else [out, report]
    check_resources(
        resolved, batch_size=max(batch_size, 2), max_params=max_params, max_memory=max_memory
    )
    if verify:  # a runtime that cannot run the network is refused now, not after the export
        from archspec.exporters.runtimes import check_runs

        with located_in(spec, overrides):
            check_runs(static_pass(resolved), verify_with)
    try:
        with replacing(outputs, inputs=inputs):  # an error or a signal after the ONNX file is in place removes it
            done = export(
                resolved,
                out,
                weights=weights,
                skip_head=skip_head,
                opset=opset,
                batch_size=batch_size,
                static=static,
                provider=provider,
                tolerance=tolerance or FP32_TOLERANCE,
                verify_output=verify,
                progress=progress or (lambda _: None),
                exporter=exporter,
                precision=precision,
                calibration=calibration,
                io_fp16=io_fp16,
                bake_preprocess=bake_preprocess,
                verify_with=tuple(verify_with),
            )
            if report is not None:
                write_text(report, done.to_json() + "\n")
    except VerificationError as failure:
        if report is not None:  # the numbers of the failure; no ONNX file was written
            write_text(report, failure.report.to_json() + "\n")
        raise
    return done


def export(
    spec: SpecLike,
    out: str | Path,
    *,
    format: str = "onnx",
    overrides: tuple[str, ...] = (),
    weights: str | Path | None = None,
    skip_head: bool = False,
    precision: str = "fp32",
    batch_size: int | None = None,
    write_unverified: bool = False,
    progress: Callable[[str], None] | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_memory: int | None = None,
    report: str | Path | None = None,
) -> ExportReport | FormatReport:
    """Export a spec's network in a deployment format and prove the file in that format's runtime.

    ``format="onnx"`` is ``export_onnx`` (its other options are there). The others
    (``EXPORT_FORMATS``; docs/deployment.md): ``torch-export`` (``.pt2``), ``openvino`` (``.xml``
    and ``.bin``), ``executorch`` (``.pte``), ``litert`` (``.tflite``), ``coreml``
    (``.mlpackage.zip``), ``tensorrt`` (``.engine``). Each is run against PyTorch on ONNX's cases
    that its shapes allow, again from seeded random norm state when the weights are fresh, and
    judged by its largest error relative to the largest output; then written atomically.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        out: the file to write (OpenVINO writes ``out`` with ``.bin`` beside it).
        format: one of ``EXPORT_FORMATS``.
        overrides: ``PATH=VALUE`` assignments applied before validation.
        weights: a state dict file to load first; none means fresh weights.
        skip_head: load ``weights`` but the output layer (fine-tuning; see ``load_weights``).
        precision: ``fp32``, or ``fp16`` where the format has it (ONNX: also ``int8``).
        batch_size: the larger verification batch where the batch stays free (default 4), the
            file's batch where the format fixes it (default 1).
        write_unverified: write the file even where its runtime cannot run here (Core ML off
            macOS); the report's ``not_run`` says why it was not run.
        progress: called with a short description as each long step starts.
        max_params: most parameters the resource guard allows.
        max_memory: most bytes the parameters and a forward pass may take.
        report: also write the report there as JSON (also when the verification fails).

    Returns:
        An ``ExportReport`` for ONNX, else a ``FormatReport`` (``to_json()``).

    Raises:
        SpecError: bad spec, weights or output path; an unknown format, a precision it lacks, an
            input it cannot express (3D in LiteRT, at the spec's ``input``), its extra not
            installed, or a runtime that cannot run here without ``write_unverified``.
        RunError: the converter failed.
        VerificationError: the file does not match PyTorch; nothing is written.
    """
    if format == "onnx":
        return export_onnx(spec, out, overrides=overrides, weights=weights, skip_head=skip_head, precision=precision,
                           batch_size=batch_size or 4, progress=progress, max_params=max_params,
                           max_memory=max_memory, report=report)
    from archspec.atomic import write_text
    from archspec.exporters.formats.export import FormatOptions, export_format, settle
    from archspec.exporters.formats.registry import check_expresses, get

    resolved = _as_spec(spec, overrides)
    options = FormatOptions(format, precision=precision, batch_size=batch_size, write_unverified=write_unverified)
    result = static_pass(resolved)
    with located_in(spec, overrides):  # an input the format cannot express, at the spec's `input`
        check_expresses(get(format), len(result.input_shape) - 1)
    fmt = settle(result, options)
    inputs = _inputs(spec, ("weights file", weights))
    check_resources(resolved, batch_size=options.batch(fmt), max_params=max_params, max_memory=max_memory)
    try:
        return export_format(resolved, out, options, weights=weights, skip_head=skip_head, inputs=inputs, report=report,
                             progress=progress or (lambda _: None))
    except VerificationError as failure:
        if report is not None:  # the numbers of the failure; no file was written
            write_text(report, failure.report.to_json() + "\n")
        raise


def benchmark(
    spec: SpecLike,
    *,
    formats: tuple[str, ...] = (),
    overrides: tuple[str, ...] = (),
    weights: str | Path | None = None,
    precision: str = "fp32",
    batch_size: int = 4,
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkReport:
    """Write every format (or ``formats``) in a scratch folder, prove each, and time it here.

    Returns:
        A ``BenchmarkReport``: per format its precision, file size, largest error relative to
        the largest output, and median milliseconds per batch at batch 1 and ``batch_size``;
        formats that cannot run here are rows whose ``skipped`` says why.

    Raises:
        SpecError: bad spec or weights, or an unknown format.
        VerificationError: a format's file does not match PyTorch.
    """
    from archspec.exporters.formats.benchmark import benchmark as run

    resolved = _as_spec(spec, overrides)
    _inputs(spec, ("weights file", weights))
    check_resources(resolved, batch_size=max(batch_size, 2))
    return run(resolved, formats=formats, precision=precision, batch_size=batch_size, weights=weights,
               rounds=rounds, progress=progress or (lambda _: None))


def begin_command() -> bool:
    """For the ``archspec`` command: its work starts, and a signal from now on unwinds it.

    Returns:
        Whether this process is the command, with its signal handlers (archspec/interrupts.py);
        ``False`` in a program that imports archspec, whose signal handling stays its own.
    """
    if _interrupts.installed():
        _interrupts.start()
    return _interrupts.installed()


def command_started() -> bool:
    """Whether ``begin_command`` made this process the command."""
    return _interrupts.installed()


def end_command(status: int) -> int:
    """For the ``archspec`` command: its exit status, once its work has ended.

    Returns:
        ``128 + N`` if signal N arrived before every output was committed (its one line is
        printed on stderr), else ``status``. Later signals are ignored, and any temporary
        file or uncommitted output a cleanup left behind is removed.
    """
    from archspec.atomic import abandon

    status = _interrupts.exit_status(status)
    abandon()
    return status
