"""Spec → one self-contained, verified ONNX file, written atomically.

The graph is written directly from the static pass by the emitters
(``archspec/exporters/emitters.py``, which says why), or with ``exporter="torch"`` by
``torch.onnx.export``. The file is built in a temporary file beside the output, checked,
run under onnxruntime, and only then renamed over the output: an error, a failed
verification or Ctrl-C leaves nothing at the output path.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import onnxruntime
import torch
from onnx import helper
from torch import nn

from archspec import __version__
from archspec.atomic import atomic_output, check_destination
from archspec.builder import build_module
from archspec.errors import Problem, RunError, SpecError, first_line
from archspec.exporters.deployment import deploy, deployment_metadata, settle
from archspec.exporters.emitters import emit
from archspec.exporters.graph import Dims
from archspec.exporters.random_state import RANDOM_STATE_SEED, initial_values, randomize_state
from archspec.exporters.report import FP32_TOLERANCE, ExportReport, RandomStateCheck, Tolerance, VerificationError
from archspec.exporters.runtimes import check_installed, verify_in
from archspec.exporters.verify import Case, Providers, References, resolve_providers, runs_opset, verify
from archspec.format.dump import resolved_document
from archspec.format.memory import BYTES_PER_VALUE
from archspec.format.schema import Spec
from archspec.format.shapes import OutputShape, StaticPass, static_pass
from archspec.weights import load_weights

INPUT_NAME = "input"
MIN_OPSET = 13  # ONNX 1.8 (2020): every node written here has its present form from 13 on
# Fixed rather than "the newest": the same spec gives the same file on every install, and
# 20 is what the torch exporters wrote before the emitters, so existing files keep their opset.
DEFAULT_OPSET = 20
EXPORTERS = ("archspec", "torch")
_MAX_FILE_BYTES = 2**31  # protobuf's limit for one message: bigger models need external data
_EXAMPLE_SEED = 0  # the tracing example of the torch exporters; verification inputs have seeds of their own


def newest_opset() -> int:
    """The newest opset the installed onnx defines: the top of what archspec writes."""
    return onnx.defs.onnx_opset_version()


def canonical_json(spec: Spec) -> str:
    """The resolved spec as sorted, compact JSON: the same spec always gives the same bytes."""
    return json.dumps(resolved_document(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def output_names(result: StaticPass) -> list[str]:
    """The file's outputs: ``logits`` for a classifier, ``prediction`` for a regressor, or the
    spec's named outputs."""
    return [output.name for output in result.outputs]


# The names of the spatial axes, as the input part names its sizes, by their count.
_SPATIAL_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def _dynamic_dims(result: StaticPass, static: bool) -> dict[int, str]:
    """Input axes left free: batch always, and every spatial axis (the head pools globally)."""
    if static:
        return {}
    spatial = len(result.input_shape) - 1
    return {0: "batch", **{2 + axis: name for axis, name in enumerate(_SPATIAL_AXES.get(spatial, ()))}}


def _second_size(spec: Spec) -> tuple[int, ...]:
    """A non-square spatial size other than the declared one that the network accepts."""
    sizes = static_pass(spec).input_shape[1:]
    names = _SPATIAL_AXES[len(sizes)]
    # 3/4 × 5/8 (× 7/8 for volumes), or 5/4 × 9/8 (× 11/8) when the smaller size falls below 1×1;
    # each rounded down to a multiple of 2, 4, … where a segmentation network's scores must come
    # back to the input's size (a U-Net's odd sizes do not).
    for step in (1, 2, 4, 8, 16, 32, 64):
        for factors in (((3, 4), (5, 8), (7, 8)), ((5, 4), (9, 8), (11, 8))):
            candidate = tuple(size * num // den // step * step for size, (num, den) in zip(sizes, factors))
            if min(candidate) < 1 or candidate == tuple(sizes):
                continue
            overrides = dict(zip(names, candidate))
            try:
                static_pass(spec.model_copy(update={"input": spec.input.model_copy(update=overrides)}))
            except SpecError:
                continue
            return candidate
    raise AssertionError("a larger input always passes the static pass")  # pragma: no cover


def verification_cases(spec: Spec, result: StaticPass, *, batch_size: int, static: bool) -> tuple[Case, ...]:
    """Batch 1 and a larger batch, and for feature maps a second spatial size; one case when static.

    The two batches at the declared size are also timed (milliseconds per batch in the report).
    """
    shape = result.input_shape
    if static:
        return (Case(f"batch {batch_size}", (batch_size, *shape), timed=True),)
    larger = max(batch_size, 2)
    cases = [Case("batch 1", (1, *shape), timed=True), Case(f"batch {larger}", (larger, *shape), timed=True)]
    if len(shape) > 1:
        sizes = _second_size(spec)
        cases.append(Case(f"batch {larger} at {'×'.join(map(str, sizes))}", (larger, shape[0], *sizes)))
    return tuple(cases)


def check_opset(opset: int, *, verifying: bool) -> None:
    """Refuse an opset archspec cannot write exactly, or (when verifying) onnxruntime cannot run.

    Raises:
        SpecError: one line naming the opsets that work.
    """
    newest = newest_opset()
    if not MIN_OPSET <= opset <= newest:
        raise SpecError(Problem(f"opset {opset} is outside the opsets archspec writes: {MIN_OPSET} to {newest} "
                                f"(onnx {onnx.__version__})", option="--opset"))
    if verifying and not runs_opset(opset):
        runnable = max((n for n in range(MIN_OPSET, opset) if runs_opset(n)), default=None)
        choice = f"choose {MIN_OPSET} to {runnable}" if runnable else "choose another opset"
        raise SpecError(Problem(f"onnxruntime {onnxruntime.__version__} cannot run opset {opset}, so the file "
                                f"could not be verified; {choice}, or --no-verify", option="--opset"))


# ---- the torch exporters, kept as --exporter torch and as a cross-check in the tests ---------


def _export_dynamo(module: nn.Module, example: torch.Tensor, dims: dict[int, str], outputs: list[str],
                   opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=outputs,
        opset_version=opset,
        dynamic_shapes=(dims,) if dims else None,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def _export_torchscript(module: nn.Module, example: torch.Tensor, dims: dict[int, str],
                        outputs: list[str], opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice; the report says which exporter ran
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            opset_version=opset,
            dynamic_axes={INPUT_NAME: dims, **{name: {0: "batch"} for name in outputs}} if dims else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def _interrupted(error: BaseException, noted: list[int]) -> bool:
    """Whether a failure is really Ctrl-C: a SIGINT arrived, or a KeyboardInterrupt is in its chain."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        stack += [current.__cause__, current.__context__]
    return bool(noted)


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """Record every SIGINT while the block runs, then handle it as before (raise KeyboardInterrupt).

    The dynamo exporter once turned Ctrl-C into an ordinary exception, the fallback ran and
    the export succeeded; with the signal noted, such a failure is re-raised as the interrupt
    it was. Outside the main thread, or when SIGINT is not handled in Python, nothing changes.
    """
    noted: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield noted
        return

    def note(number: int, frame: object) -> None:
        noted.append(number)
        previous(number, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def _export_torch(module: nn.Module, example: torch.Tensor, dims: dict[int, str], outputs: list[str],
                  opset: int) -> tuple[onnx.ModelProto, str, str | None]:
    """The dynamo exporter, then the TorchScript one if it fails; never an interrupt taken for a failure."""
    with _noting_interrupts() as noted:
        try:
            model, exporter, reason = _export_dynamo(module, example, dims, outputs, opset), "dynamo", None
        except Exception as error:  # any exporter failure: the fallback gets its chance
            if _interrupted(error, noted):
                raise KeyboardInterrupt from None
            reason = f"torch.onnx.export(dynamo=True) failed: {first_line(error)}"
            try:
                model, exporter = _export_torchscript(module, example, dims, outputs, opset), "torchscript"
            except Exception as error:
                if _interrupted(error, noted):
                    raise KeyboardInterrupt from None
                raise RunError(f"ONNX export failed: {reason}; TorchScript exporter: {first_line(error)}") from None
        if noted:  # swallowed inside the exporter, which then went on
            raise KeyboardInterrupt
    if _opset(model) != opset:
        raise RunError(f"torch.onnx.export ({exporter}) wrote opset {_opset(model)}, not the {opset} asked for; "
                       f"--exporter archspec writes exactly the opset asked for")
    return model, exporter, reason


def _export(result: StaticPass, module: nn.Module, *, exporter: str, opset: int, static: bool, batch_size: int,
            progress: Callable[[str], None]) -> tuple[onnx.ModelProto, str, str | None]:
    """The ONNX model, which exporter made it, and why the torch exporter fell back if it did."""
    dims = _dynamic_dims(result, static)
    outputs = output_names(result)
    example_batch = batch_size if static else max(batch_size, 2)  # batch 1 would be specialised
    if exporter == "torch":
        progress(f"exporting with torch.onnx (opset {opset})")
        example = torch.randn((example_batch, *result.input_shape),
                              generator=torch.Generator().manual_seed(_EXAMPLE_SEED))
        return _export_torch(module, example, dims, outputs, opset)
    input_dims: Dims = [dims.get(axis, size) for axis, size in enumerate((example_batch, *result.input_shape))]
    graph_outputs = [(tap.name, _output_dims(tap, dims, example_batch)) for tap in result.outputs]
    model = emit(result, module, opset=opset, input_name=INPUT_NAME, input_dims=input_dims, outputs=graph_outputs,
                 step=lambda path: progress(f"writing the ONNX graph: {path}"))
    return model, "archspec", None


def _output_dims(output: OutputShape, dims: dict[int, str], batch: int) -> Dims:
    """An output's dims: its batch and spatial axes dynamic where the input's are (a map's named
    by its stride, ``height/4``), its channels fixed."""
    spatial = [dims[2 + axis] if output.reduction == 1 else f"{dims[2 + axis]}/{output.reduction}"
               if 2 + axis in dims else size for axis, size in enumerate(output.shape[1:])]
    return [dims.get(0, batch), output.shape[0], *spatial]


def _random_state_check(result: StaticPass, module: nn.Module, cases: tuple[Case, ...], *, exporter: str,
                        opset: int, static: bool, batch_size: int, providers: Providers, tolerance: Tolerance,
                        passed: bool, progress: Callable[[str], None]) -> RandomStateCheck | None:
    """When the module's norms or biases hold their initial values, emit and verify a copy with
    seeded random ones: a fresh norm is an identity and hides a wrong BatchNormalization."""
    held = initial_values(module) if passed and exporter == "archspec" else None
    if held is None:
        return None
    progress("verifying again with seeded random norm statistics and biases")
    randomized = randomize_state(copy.deepcopy(module), RANDOM_STATE_SEED).eval()
    model, _, _ = _export(result, randomized, exporter=exporter, opset=opset, static=static,
                          batch_size=batch_size, progress=progress)
    verification = verify(model.SerializeToString(), randomized, cases, providers=providers,
                          tolerance=tolerance, progress=progress)
    return RandomStateCheck(held, RANDOM_STATE_SEED, verification)


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _graph_input_shape(model: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(dim.dim_param or dim.dim_value for dim in dims)


def _versions() -> dict[str, str]:
    return {
        "archspec": __version__,  # not package metadata, which a checkout run uninstalled lacks
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _write(path: Path, model: onnx.ModelProto) -> None:
    with path.open("wb") as file:
        file.write(model.SerializeToString())


def export_onnx(
    spec: Spec,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    skip_head: bool = False,
    opset: int | None = None,
    batch_size: int = 4,
    static: bool = False,
    provider: str = "auto",
    tolerance: Tolerance = FP32_TOLERANCE,
    verify_output: bool = True,
    progress: Callable[[str], None] = lambda _: None,
    exporter: str = "archspec",
    precision: str = "fp32",
    calibration: str | Path | None = None,
    io_fp16: bool = False,
    bake_preprocess: bool = False,
    verify_with: tuple[str, ...] = (),
) -> ExportReport:
    """Export a validated spec's network to ``out`` and prove the file under onnxruntime.

    See ``archspec.export_onnx`` for the arguments.

    Raises:
        SpecError: bad weights, an unusable output path, an unavailable provider, an opset
            outside 13 to the newest onnx defines (or that onnxruntime cannot run, when
            verifying), an unknown exporter, or a model too large for one file; bad
            deployment options or calibration inputs, or fp16 overflow; a ``verify_with``
            runtime that is unknown or not installed.
        RunError: the torch exporter failed, or wrote another opset than the one asked for.
        VerificationError: the file does not match PyTorch; nothing is left at ``out``.
    """
    out = Path(out)
    check_destination(out)
    if exporter not in EXPORTERS:
        raise SpecError(Problem(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}",
                                option="--exporter"))
    opset = DEFAULT_OPSET if opset is None else opset
    check_opset(opset, verifying=verify_output)
    providers = resolve_providers(provider) if verify_output else None
    if verify_with and not verify_output:
        raise SpecError(Problem("adds runtimes to the verification; it cannot go with --no-verify",
                                option="--verify-with"))
    runtimes = check_installed(verify_with)
    deployment = settle(spec, precision=precision, calibration=calibration, io_fp16=io_fp16,
                        bake_preprocess=bake_preprocess)
    result = static_pass(spec)
    progress("building the network")
    module = build_module(result)
    if weights is not None:
        load_weights(module, weights, skip_head=skip_head)
    module.eval()
    values = sum(t.numel() for t in (*module.parameters(), *module.buffers()))
    if values * BYTES_PER_VALUE >= _MAX_FILE_BYTES:
        raise SpecError(Problem(f"{values:,} weight values exceed the 2 GiB a single ONNX file holds"))

    spec_json = canonical_json(spec)
    versions = _versions()
    with atomic_output(out) as temporary:
        model, exporter_name, fallback_reason = _export(result, module, exporter=exporter, opset=opset,
                                                        static=static, batch_size=batch_size, progress=progress)
        metadata = {
            "archspec.spec": spec_json,
            "archspec.spec_sha256": hashlib.sha256(spec_json.encode()).hexdigest(),
            "archspec.exporter": exporter_name,
            "archspec.opset": str(_opset(model)),
            "archspec.verification": "not run",
            **deployment_metadata(spec, deployment),
            **{f"{name}.version": number for name, number in versions.items()},
        }
        helper.set_model_props(model, metadata)
        verification = random_state = None
        references: References = {}  # PyTorch's outputs, computed once for every runtime
        if providers is not None:  # on the serialised model: the file differs only in this result
            cases = verification_cases(spec, result, batch_size=batch_size, static=static)
            verification = verify(model.SerializeToString(), module, cases, providers=providers,
                                  tolerance=tolerance, progress=progress, references=references)
            metadata["archspec.verification"] = json.dumps(verification.summary(), sort_keys=True)
            random_state = _random_state_check(result, module, cases, exporter=exporter_name, opset=opset,
                                               static=static, batch_size=batch_size, providers=providers,
                                               tolerance=tolerance, passed=verification.passed, progress=progress)
            if random_state is not None:
                metadata["archspec.verification_random_state"] = json.dumps(
                    {"initial_values": random_state.initial_values, "seed": random_state.seed,
                     **random_state.verification.summary()}, sort_keys=True)
            helper.set_model_props(model, metadata)
        checks = []
        if runtimes and verification.passed:  # the fp32 graph, as onnxruntime saw it
            _write(temporary, model)
            for name in runtimes:
                progress(f"verifying in {name}")
                checks.append(verify_in(name, temporary, module, cases, tolerance=tolerance, references=references))
        deployed = None
        if deployment.transforms and (verification is None or verification.passed):
            # fp16, int8 or baked: made from the proven fp32 graph, then checked on its own.
            shapes = [(case.name, case.shape)
                      for case in verification_cases(spec, result, batch_size=batch_size, static=static)]
            model, deployed = deploy(model, module, spec, deployment, shapes,
                                     providers=None if providers is None else providers.order, progress=progress)
        progress("writing the file")
        _write(temporary, model)
        progress("checking the file with onnx.checker")
        try:
            onnx.checker.check_model(str(temporary), full_check=True)
            checker = "passed"
        except onnx.checker.ValidationError as error:
            checker = first_line(error)
        passed = (checker == "passed" and (verification is None or verification.passed)
                  and (random_state is None or random_state.passed)
                  and all(check.passed for check in checks) and (deployed is None or deployed.passed))
        report = ExportReport(
            spec_name=spec.name,
            spec_sha256=metadata["archspec.spec_sha256"],
            output=str(out),
            params=sum(p.numel() for p in module.parameters()),
            weights=None if weights is None else str(weights),
            exporter=exporter_name,
            exporter_fallback_reason=fallback_reason,
            opset=_opset(model),
            input_name=INPUT_NAME,
            output_names=tuple(output_names(result)),
            input_shape=_graph_input_shape(model),
            file_bytes=temporary.stat().st_size,
            versions=versions,
            checker=checker,
            written=passed,
            verification=verification,
            precision=deployment.precision,
            deployment=deployed,
            runtimes=tuple(checks),
            random_state=random_state,
        )
        if checker != "passed":
            raise VerificationError(f"onnx.checker rejected the file: {checker}", report)
        if random_state is not None and not random_state.passed:
            again = random_state.verification
            worst = again.error or "; ".join(case.describe() for case in again.failures)
            raise VerificationError(f"verification with seeded random norm statistics, affine values and biases "
                                    f"failed (the module passed with {random_state.initial_values} at their initial "
                                    f"values, which hide norm and bias mistakes; rtol {tolerance.rtol:g}, "
                                    f"atol {tolerance.atol:g}): {worst}", report)
        if deployed is not None and not deployed.passed and (verification is None or verification.passed):
            worst = deployed.error or "; ".join(case.describe() for case in deployed.failures)
            raise VerificationError(f"{deployment.precision} check failed ({deployed.tolerance.describe()}): "
                                    f"{worst}", report)
        for check in checks:
            if not check.passed:
                worst = check.error or "; ".join(case.describe() for case in check.failures)
                raise VerificationError(f"verification in {check.runtime} failed (rtol {tolerance.rtol:g}, "
                                        f"atol {tolerance.atol:g}): {worst}", report)
        if not passed:
            assert verification is not None
            worst = verification.error or "; ".join(case.describe() for case in verification.failures)
            raise VerificationError(
                f"verification failed (rtol {tolerance.rtol:g}, atol {tolerance.atol:g}): {worst}", report
            )
    return report
