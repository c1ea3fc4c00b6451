"""Spec → one self-contained, verified ONNX file, written atomically.

The file is built in a temporary file beside the output, checked, run under
onnxruntime, and only then renamed over the output: an error, a failed
verification or Ctrl-C leaves nothing at the output path.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import onnx
import onnxruntime
import torch
from onnx import helper
from torch import nn

from archspec.atomic import atomic_output, check_destination
from archspec.builder import build_module
from archspec.errors import Problem, RunError, SpecError, first_line
from archspec.exporters.report import FP32_TOLERANCE, ExportReport, Tolerance, VerificationError
from archspec.exporters.verify import Case, resolve_providers, verify
from archspec.format.dump import resolved_document
from archspec.format.memory import BYTES_PER_VALUE
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, static_pass
from archspec.weights import load_weights

INPUT_NAME = "input"
_MAX_FILE_BYTES = 2**31  # protobuf's limit for one message: bigger models need external data
_EXAMPLE_SEED = 0  # the tracing example; verification inputs have seeds of their own


def canonical_json(spec: Spec) -> str:
    """The resolved spec as sorted, compact JSON: the same spec always gives the same bytes."""
    return json.dumps(resolved_document(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def output_name(result: StaticPass) -> str:
    """``logits`` for a classifier, ``prediction`` for a regressor."""
    return result.stages[-1].part.output_name


_SPATIAL_AXES = ("height", "width")


def _dynamic_dims(result: StaticPass, static: bool) -> dict[int, str]:
    """Input axes left free: batch always, and every spatial axis (the head pools globally)."""
    if static:
        return {}
    spatial = len(result.input_shape) - 1
    return {0: "batch", **{2 + axis: _SPATIAL_AXES[axis] for axis in range(spatial)}}


def _second_size(spec: Spec) -> tuple[int, ...]:
    """A non-square spatial size other than the declared one that the network accepts."""
    sizes = static_pass(spec).input_shape[1:]
    for factors in (((3, 4), (5, 8)), ((5, 4), (9, 8))):
        candidate = tuple(size * num // den for size, (num, den) in zip(sizes, factors))
        overrides = {name: size for name, size in zip(_SPATIAL_AXES, candidate)}
        try:
            static_pass(spec.model_copy(update={"input": spec.input.model_copy(update=overrides)}))
        except SpecError:
            continue
        return candidate
    raise AssertionError("a larger input always passes the static pass")  # pragma: no cover


def verification_cases(spec: Spec, result: StaticPass, *, batch_size: int, static: bool) -> tuple[Case, ...]:
    """Batch 1 and a larger batch, and for images a second spatial size; one case when static."""
    shape = result.input_shape
    if static:
        return (Case(f"batch {batch_size}", (batch_size, *shape)),)
    larger = max(batch_size, 2)
    cases = [Case("batch 1", (1, *shape)), Case(f"batch {larger}", (larger, *shape))]
    if len(shape) > 1:
        sizes = _second_size(spec)
        cases.append(Case(f"batch {larger} at {'×'.join(map(str, sizes))}", (larger, shape[0], *sizes)))
    return tuple(cases)


def _export_dynamo(module: nn.Module, example: torch.Tensor, dims: dict[int, str], output: str,
                   opset: int | None) -> onnx.ModelProto:
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[output],
        opset_version=opset,
        dynamic_shapes=(dims,) if dims else None,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def _export_torchscript(module: nn.Module, example: torch.Tensor, dims: dict[int, str],
                        output: str, opset: int | None) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice; the report says which exporter ran
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[output],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: dims, output: {0: "batch"}} if dims else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def _export(module: nn.Module, example: torch.Tensor, dims: dict[int, str], output: str,
            opset: int | None) -> tuple[onnx.ModelProto, str, str | None]:
    """The ONNX model, which exporter made it, and why the first choice failed if it did."""
    try:
        return _export_dynamo(module, example, dims, output, opset), "dynamo", None
    except Exception as error:  # any exporter failure: the fallback gets its chance
        reason = f"torch.onnx.export(dynamo=True) failed: {first_line(error)}"
    try:
        return _export_torchscript(module, example, dims, output, opset), "torchscript", reason
    except Exception as error:
        raise RunError(f"ONNX export failed: {reason}; TorchScript exporter: {first_line(error)}") from None


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _graph_input_shape(model: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(dim.dim_param or dim.dim_value for dim in dims)


def _versions() -> dict[str, str]:
    return {
        "archspec": version("archspec"),
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
    opset: int | None = None,
    batch_size: int = 4,
    static: bool = False,
    provider: str = "auto",
    tolerance: Tolerance = FP32_TOLERANCE,
    verify_output: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> ExportReport:
    """Export a validated spec's network to ``out`` and prove the file under onnxruntime.

    See ``archspec.export_onnx`` for the arguments.

    Raises:
        SpecError: bad weights, an unusable output path, an unavailable provider,
            or a model too large for one file.
        VerificationError: the file does not match PyTorch; nothing is left at ``out``.
    """
    out = Path(out)
    check_destination(out)
    providers = resolve_providers(provider) if verify_output else None
    result = static_pass(spec)
    module = build_module(result)
    if weights is not None:
        load_weights(module, weights)
    module.eval()
    values = sum(t.numel() for t in (*module.parameters(), *module.buffers()))
    if values * BYTES_PER_VALUE >= _MAX_FILE_BYTES:
        raise SpecError(Problem(f"{values:,} weight values exceed the 2 GiB a single ONNX file holds"))

    dims = _dynamic_dims(result, static)
    example_batch = batch_size if static else max(batch_size, 2)  # batch 1 would be specialised
    example = torch.randn((example_batch, *result.input_shape),
                          generator=torch.Generator().manual_seed(_EXAMPLE_SEED))
    output = output_name(result)
    spec_json = canonical_json(spec)
    versions = _versions()

    with atomic_output(out) as temporary:
        progress("exporting with torch.onnx")
        model, exporter, fallback_reason = _export(module, example, dims, output, opset)
        metadata = {
            "archspec.spec": spec_json,
            "archspec.spec_sha256": hashlib.sha256(spec_json.encode()).hexdigest(),
            "archspec.exporter": exporter,
            "archspec.opset": str(_opset(model)),
            "archspec.verification": "not run",
            **{f"{name}.version": number for name, number in versions.items()},
        }
        helper.set_model_props(model, metadata)
        _write(temporary, model)
        verification = None
        if providers is not None:
            cases = verification_cases(spec, result, batch_size=batch_size, static=static)
            verification = verify(temporary, module, cases, providers=providers, tolerance=tolerance,
                                  progress=progress)
            metadata["archspec.verification"] = json.dumps(verification.summary(), sort_keys=True)
            helper.set_model_props(model, metadata)
            _write(temporary, model)
        progress("checking the file with onnx.checker")
        try:
            onnx.checker.check_model(str(temporary), full_check=True)
            checker = "passed"
        except onnx.checker.ValidationError as error:
            checker = first_line(error)
        passed = checker == "passed" and (verification is None or verification.passed)
        report = ExportReport(
            spec_name=spec.name,
            spec_sha256=metadata["archspec.spec_sha256"],
            output=str(out),
            params=sum(p.numel() for p in module.parameters()),
            weights=None if weights is None else str(weights),
            exporter=exporter,
            exporter_fallback_reason=fallback_reason,
            opset=_opset(model),
            input_name=INPUT_NAME,
            output_name=output,
            input_shape=_graph_input_shape(model),
            file_bytes=temporary.stat().st_size,
            versions=versions,
            checker=checker,
            written=passed,
            verification=verification,
        )
        if checker != "passed":
            raise VerificationError(f"onnx.checker rejected the file: {checker}", report)
        if not passed:
            assert verification is not None
            worst = verification.error or "; ".join(case.describe() for case in verification.failures)
            raise VerificationError(
                f"verification failed (rtol {tolerance.rtol:g}, atol {tolerance.atol:g}): {worst}", report
            )
    return report
