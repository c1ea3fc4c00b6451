"""After the fp32 file is proven: the file a deployment asks for, and its proof against PyTorch.

``settle`` checks the options before any long work (an int8 export without calibration
inputs is refused, never calibrated on random data); ``deploy`` bakes the preprocessing
into the graph if asked, converts to fp16 or int8, runs the result under onnxruntime and
compares it with the fp32 PyTorch module. Errors are measured relative to the largest
output PyTorch gives on each case: an fp16 or int8 file cannot meet an elementwise bound
made for fp32 near zero, and what a user compares is the output as a whole.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch import nn

from archspec.errors import Problem, SpecError, first_line
from archspec.exporters.calibration import batches, read_calibration
from archspec.exporters.precision import (
    NO_INT8_DOT_PRODUCT,
    check_fp16_activations,
    int8_dot_product,
    to_fp16,
    to_int8,
)
from archspec.exporters.report import (
    BAKED_FP32_TOLERANCE,
    FP16_TOLERANCE,
    INT8_CLASSIFIER_TOLERANCE,
    INT8_REGRESSOR_TOLERANCE,
    INT8_SPEED_TARGET,
    DeploymentCase,
    DeploymentCheck,
    DeploymentTolerance,
    SpeedComparison,
)
from archspec.exporters.preprocess_graph import bake_normalisation, check_bakeable, normalise, preprocess_metadata
from archspec.format.schema import Spec

PRECISIONS = ("fp32", "fp16", "int8")
PRECISION_KEY = "archspec.precision"
_CPU = "CPUExecutionProvider"
_SEED = 0  # case i draws its input from seed _SEED + i, as the fp32 verification does
_SPEED_ROUNDS = 3  # timed runs of each file, alternating, for the int8 / fp32 comparison


@dataclass(frozen=True)
class Deployment:
    """The deployment options, checked: what ``deploy`` makes of the fp32 graph."""

    precision: str = "fp32"
    calibration: np.ndarray | None = None
    """int8: the checked calibration inputs (``read_calibration``)."""
    calibration_file: str | None = None
    io_fp16: bool = False
    bake_preprocess: bool = False

    @property
    def transforms(self) -> bool:
        """Whether the file differs from the fp32 graph (and so needs a check of its own)."""
        return self.precision != "fp32" or self.bake_preprocess


def settle(spec: Spec, *, precision: str = "fp32", calibration: str | Path | None = None,
           io_fp16: bool = False, bake_preprocess: bool = False) -> Deployment:
    """Check the deployment options against the spec, before the network is built.

    Args:
        spec: the validated spec.
        precision: ``fp32``, ``fp16`` or ``int8``.
        calibration: int8 only, and required there: a ``.npy`` array ``(N, *input shape)``
            of inputs as the file takes them (unnormalised when ``bake_preprocess``).
        io_fp16: fp16 only: the file's input and output are float16 too.
        bake_preprocess: put the spec's ``(x − mean) / std`` into the graph.

    Raises:
        SpecError: one line: an unknown precision, int8 without calibration inputs, an option
            that does not apply to the precision, a bad calibration array, or nothing to bake.
    """
    if precision not in PRECISIONS:
        raise SpecError(Problem(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}",
                                option="--precision"))
    if precision == "int8" and calibration is None:
        shape = ", ".join(map(str, spec.input.sample_shape()))
        raise SpecError(Problem(f"int8 needs calibration inputs: --calibration FILE.npy, an array of shape "
                                f"(N, {shape}); archspec does not calibrate on random data", option="--precision"))
    if precision != "int8" and calibration is not None:
        raise SpecError(Problem(f"calibration inputs apply to --precision int8, not {precision}",
                                option="--calibration"))
    if io_fp16 and precision != "fp16":
        raise SpecError(Problem(f"float16 input and output apply to --precision fp16, not {precision}",
                                option="--io"))
    if bake_preprocess:
        check_bakeable(spec)
    inputs = None if calibration is None else read_calibration(calibration, spec.input.sample_shape())
    return Deployment(precision=precision, calibration=inputs,
                      calibration_file=None if calibration is None else str(calibration),
                      io_fp16=io_fp16, bake_preprocess=bake_preprocess)


@dataclass(frozen=True)
class PerPositionTolerance(DeploymentTolerance):
    """A segmentation head's bound: ``min_top1_agreement`` is the share of positions (pixels, or
    samples and voxels) whose arg-max class agrees, judged on ``judged_on``."""

    judged_on: str = "every case"

    def describe(self) -> str:
        return (f"max error ≤ {self.max_relative_error:g} of the largest output, "
                f"per-pixel agreement ≥ {self.min_top1_agreement:.0%} on {self.judged_on}")


class _PerPositionCase(DeploymentCase):
    """A case of a segmentation head: its agreement is per pixel."""

    def describe(self) -> str:
        return super().describe().replace(", top-1 agreement ", ", per-pixel agreement ")


# Segmentation heads give class scores at every position: their decisions are compared per pixel
# (the arg-max over the channel axis at every position), with the error relative to the largest
# fp32 score. Good files of FC-DenseNet56 at 64×64 (fresh, and two seeded random norm states):
# fp16 0.5e-3 to 0.7e-3 of the largest score, 99.90% to 100% of pixels agreeing; int8 2.5e-2 to
# 8.9e-2 (the maximum over 11 scores at every pixel spreads more than over one vector's), 96.7% to
# 97.3% agreeing on the calibration inputs; calibrated on inputs × 0.05, 0.78 to 0.93.
FP16_PER_POSITION_TOLERANCE = PerPositionTolerance(max_relative_error=FP16_TOLERANCE.max_relative_error,
                                                   min_top1_agreement=0.99)
INT8_PER_POSITION_TOLERANCE = PerPositionTolerance(max_relative_error=0.2, min_top1_agreement=0.9,
                                                   judged_on="the calibration inputs")


def decisions(spec: Spec) -> str | None:
    """What arg-max agreement means for the network's output: ``input`` (a classifier's one class
    per input), ``position`` (a segmentation head's class at every pixel or voxel), or ``None``
    (regressors, and named outputs: a backbone's maps are not class scores)."""
    if spec.outputs is not None or not spec.head.class_scores:
        return None
    return "input" if spec.head.pools else "position"


def tolerance_for(precision: str, *, classifier: bool, per_position: bool = False) -> DeploymentTolerance:
    """The tolerance a converted file is judged by (fp32 only ever reaches here baked).

    Args:
        precision: ``fp16``, ``int8`` or ``fp32`` (baked).
        classifier: the output is class scores (``decisions`` is not ``None``).
        per_position: the class scores are per position (a segmentation head).
    """
    if precision == "fp16":
        return FP16_PER_POSITION_TOLERANCE if classifier and per_position else FP16_TOLERANCE
    if precision == "int8":
        if classifier:
            return INT8_PER_POSITION_TOLERANCE if per_position else INT8_CLASSIFIER_TOLERANCE
        return INT8_REGRESSOR_TOLERANCE
    return BAKED_FP32_TOLERANCE


def _seeded(deployment: Deployment, shapes: Sequence[tuple[str, tuple[int, ...]]]
            ) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """Each case's seeded input, and how it was drawn."""
    cases = []
    for index, (name, shape) in enumerate(shapes):
        generator = torch.Generator().manual_seed(_SEED + index)
        # Baked files take raw input in [0, 1]; the others normalised input, as PyTorch does.
        draw = torch.rand if deployment.bake_preprocess else torch.randn
        cases.append((name, draw(shape, generator=generator).numpy()))
    return ("seeded uniform in [0, 1)" if deployment.bake_preprocess else "seeded standard normal"), cases


CALIBRATION_CASE = "calibration"


def _case_inputs(deployment: Deployment, shapes: Sequence[tuple[str, tuple[int, ...]]]
                 ) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """Each case's input and where they come from: seeded draws, and for int8 the calibration array first.

    int8 is also checked on the seeded inputs of the input scale the spec declares: on its own
    calibration inputs alone, a file calibrated on wrongly scaled data looks right.
    """
    source, cases = _seeded(deployment, shapes)
    if deployment.precision != "int8":
        return source, cases
    assert deployment.calibration is not None
    inputs = deployment.calibration
    # Only at the calibrated input size: at another size the pooled features spread more, and a
    # fresh tutorial's good file measured 0.14 of the largest logit at 72×60 (1e-2 at 96×96).
    cases = [(name, x) for name, x in cases if x.shape[1:] == inputs.shape[1:]]
    return (f"calibration array {deployment.calibration_file} ({len(inputs)} inputs) and {source}",
            [(f"{CALIBRATION_CASE} ({len(inputs)} inputs)", inputs), *cases])


def _compare(name: str, input_shape: tuple[int, ...], actual: Sequence[np.ndarray], expected: Sequence[np.ndarray],
             tolerance: DeploymentTolerance, classifier: bool, *, judge_agreement: bool = True) -> DeploymentCase:
    """One case: each output measured on its own scale (a backbone's maps differ in size), the worst
    one reported; for class scores, the share of decisions (per input, or per position) that agree."""
    actual = [np.asarray(a, dtype=np.float64) for a in actual]
    expected = [np.asarray(e, dtype=np.float64) for e in expected]
    largest = max(float(np.abs(e).max(initial=0.0)) for e in expected)
    if len(actual) != len(expected) or any(a.shape != e.shape for a, e in zip(actual, expected)):
        return DeploymentCase(name, input_shape, largest, None, None, None, sum(int(a.size) for a in actual), False)
    worst = (-1.0, 0.0, largest)  # relative error, max abs error, largest output of the worst output
    non_finite = 0
    for got, want in zip(actual, expected):
        finite = np.isfinite(got)
        non_finite += int((~finite).sum())
        scale = float(np.abs(want).max(initial=0.0))
        max_abs = float(np.abs(np.where(finite, got, 0.0) - want).max(initial=0.0))
        worst = max(worst, (max_abs / max(scale, np.finfo(np.float32).tiny), max_abs, scale))
    relative, max_abs, largest = worst
    agreement = None
    if classifier and judge_agreement:
        # The arg-max over classes (axis 1) of every input, and for a segmentation head of every position.
        agreement = float(np.mean(np.argmax(actual[0], axis=1) == np.argmax(expected[0], axis=1)))
    passed = non_finite == 0
    if tolerance.max_relative_error is not None:
        passed = passed and relative <= tolerance.max_relative_error
    if tolerance.min_top1_agreement is not None and agreement is not None:
        passed = passed and agreement >= tolerance.min_top1_agreement
    kind = _PerPositionCase if isinstance(tolerance, PerPositionTolerance) else DeploymentCase
    return kind(name, input_shape, largest, max_abs, relative, agreement, non_finite, passed)


def _outputs(out: torch.Tensor | dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The module's outputs in the file's order: one tensor, or a backbone's named maps."""
    return [value.numpy() for value in (out.values() if isinstance(out, dict) else [out])]


def _joined(parts: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per output, the batches' arrays joined along the batch axis."""
    return [np.concatenate(arrays) for arrays in zip(*parts)]


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch a static graph takes (``--static``), or ``None`` when the batch is dynamic."""
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    return batch.dim_value if batch.HasField("dim_value") else None


def _session(model: onnx.ModelProto, providers: Sequence[str | tuple[str, dict[str, str]]]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: spinning threads time the neighbours on a busy machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))


def compare_speed(model: onnx.ModelProto, fp32: onnx.ModelProto, x: np.ndarray,
                  providers: Sequence[str | tuple[str, dict[str, str]]], *,
                  rounds: int = _SPEED_ROUNDS) -> SpeedComparison:
    """Median time per batch of ``model`` and of the ``fp32`` graph on ``x``, timed in turn round after
    round after one warm-up run each, so that a busy machine slows both alike; and the CPU's int8 support."""
    sessions = [_session(model, providers), _session(fp32, providers)]
    feeds = [{session.get_inputs()[0].name: x} for session in sessions]
    times: list[list[float]] = [[], []]
    for session, feed in zip(sessions, feeds):
        session.run(None, feed)
    for _ in range(rounds):
        for session, feed, measured in zip(sessions, feeds, times):
            start = time.perf_counter()
            session.run(None, feed)
            measured.append(time.perf_counter() - start)
    support = int8_dot_product()
    has = support not in ("unknown",) and not support.startswith(NO_INT8_DOT_PRODUCT)
    return SpeedComparison(provider=sessions[0].get_providers()[0], batch=int(x.shape[0]),
                           input_shape=tuple(x.shape), milliseconds=1000 * statistics.median(times[0]),
                           fp32_milliseconds=1000 * statistics.median(times[1]), rounds=rounds,
                           cpu_int8_dot_product=support, target=INT8_SPEED_TARGET if has else None)


def _timed_input(deployment: Deployment, shapes: Sequence[tuple[str, tuple[int, ...]]]) -> np.ndarray | None:
    """The largest seeded batch at the declared input size, or ``None`` without cases."""
    _, cases = _seeded(deployment, shapes)
    declared = [x for _, x in cases if cases and x.shape[1:] == cases[0][1].shape[1:]]
    return max(declared, key=len, default=None)


def check(model: onnx.ModelProto, module: nn.Module, spec: Spec, deployment: Deployment,
          shapes: Sequence[tuple[str, tuple[int, ...]]], *,
          providers: Sequence[str | tuple[str, dict[str, str]]] = (_CPU,),
          progress: Callable[[str], None] = lambda _: None,
          fp32: onnx.ModelProto | None = None) -> DeploymentCheck:
    """Run the converted ``model`` under onnxruntime and compare it with the fp32 ``module``.

    Args:
        model: the file's graph, as ``deploy`` made it.
        module: the fp32 PyTorch network, in eval mode.
        spec: the spec (its head says classifier or regressor; its preprocess, the normalisation).
        deployment: the settled options.
        shapes: ``(name, input shape)`` of each seeded case (the fp32 verification's cases);
            int8 is compared on its calibration inputs first, then on these.
        providers: the onnxruntime providers to ask for.
        progress: called with a short description before each step.
        fp32: the fp32 graph; with it, an int8 file's time per batch is compared with its
            (``DeploymentCheck.speed``) on the largest seeded batch.

    Raises:
        SpecError: fp16 output NaN or infinite where PyTorch's is finite (fp16 overflow).
    """
    judged = decisions(spec)
    classifier = judged is not None
    tolerance = tolerance_for(deployment.precision, classifier=classifier, per_position=judged == "position")
    source, cases = _case_inputs(deployment, shapes)
    sample_shape = spec.input.sample_shape()
    io_dtype = np.float16 if deployment.io_fp16 else np.float32
    batch = fixed_batch(model)
    results: list[DeploymentCase] = []
    ran: tuple[str, ...] = ()
    speed: SpeedComparison | None = None

    def report(error: str | None = None) -> DeploymentCheck:
        return DeploymentCheck(deployment.precision, np.dtype(io_dtype).name, deployment.bake_preprocess, source,
                               tolerance, ran, tuple(results), error, speed)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    except Exception as error:  # onnxruntime's own error types for a file it cannot load
        return report(f"onnxruntime could not load the file: {first_line(error)}")
    ran = tuple(session.get_providers())
    input_name = session.get_inputs()[0].name
    module.eval()
    for name, inputs in cases:
        progress(f"checking {deployment.precision} on {name}")
        taken = normalise(inputs, spec.preprocess, sample_shape) if deployment.bake_preprocess else inputs
        try:
            with torch.no_grad():
                expected = _joined([_outputs(module(torch.from_numpy(part))) for part in batches(taken)])
            actual = [joined[:len(inputs)] for joined in _joined(
                [session.run(None, {input_name: part.astype(io_dtype)}) for part in batches(inputs, batch)])]
        except Exception as error:  # onnxruntime's own types for a file it cannot run
            return report(f"onnxruntime could not run the file: {first_line(error)}")
        # Top-1 agreement means something on real inputs only: the calibration array's.
        result = _compare(name, tuple(inputs.shape), actual, expected, tolerance, classifier,
                          judge_agreement=deployment.precision != "int8" or name.startswith(CALIBRATION_CASE))
        if deployment.precision == "fp16" and result.non_finite and all(np.isfinite(e).all() for e in expected):
            raise SpecError(Problem(f"fp16 overflow: {result.non_finite} of the fp16 file's outputs on {name} are "
                                    f"NaN or infinite where PyTorch's are finite (largest {result.largest_output:.3g})",
                                    option="--precision"))
        results.append(result)
    timed = _timed_input(deployment, shapes)
    if deployment.precision == "int8" and fp32 is not None and timed is not None and fixed_batch(model) in (
            None, len(timed)):
        progress(f"timing int8 against fp32 at batch {len(timed)}")
        try:
            speed = compare_speed(model, fp32, timed, providers)
        except Exception as error:  # onnxruntime's own types; the cases above ran the same file
            return report(f"onnxruntime could not time the file: {first_line(error)}")
    return report()


def deployment_metadata(spec: Spec, deployment: Deployment) -> dict[str, str]:
    """``archspec.precision``, and for a spec with a preprocess ``archspec.preprocess`` and ``…_baked``."""
    return {PRECISION_KEY: deployment.precision, **preprocess_metadata(spec, baked=deployment.bake_preprocess)}


def deploy(model: onnx.ModelProto, module: nn.Module, spec: Spec, deployment: Deployment,
           shapes: Sequence[tuple[str, tuple[int, ...]]], *,
           providers: Sequence[str | tuple[str, dict[str, str]]] | None = (_CPU,),
           progress: Callable[[str], None] = lambda _: None) -> tuple[onnx.ModelProto, DeploymentCheck | None]:
    """The file a deployment asks for, made from the proven fp32 graph, and its check.

    Args:
        model: the fp32 graph, already verified against ``module``.
        module: the fp32 PyTorch network it came from, in eval mode.
        spec: the validated spec.
        deployment: from ``settle``.
        shapes: ``(name, input shape)`` of each seeded case for fp16 and baked fp32.
        providers: the onnxruntime providers the check asks for; ``None``: no check.
        progress: called with a short description as each long step starts.

    Returns:
        The graph to write, with the fp32 graph's metadata, ``deployment_metadata`` and the
        check's summary (``archspec.deployment_check``); and the check (``None`` when the
        graph is the fp32 one or nothing was checked). A check that did not pass is
        returned, not raised: the caller reports it and writes nothing.

    Raises:
        SpecError: fp16 overflow (a weight, an activation or an output beyond 65504).
    """
    sample_shape = spec.input.sample_shape()
    metadata = {p.key: p.value for p in model.metadata_props}
    metadata.update(deployment_metadata(spec, deployment))
    result = model
    if deployment.bake_preprocess:
        assert spec.preprocess is not None
        result = bake_normalisation(result, spec.preprocess, sample_shape)
    if deployment.precision == "fp16":
        progress("checking the activations fit fp16")
        _, cases = _case_inputs(deployment, shapes)
        taken = [normalise(x, spec.preprocess, sample_shape) if deployment.bake_preprocess else x for _, x in cases]
        check_fp16_activations(module, taken)
        progress("converting to fp16")
        result = to_fp16(result, io_fp16=deployment.io_fp16)
    elif deployment.precision == "int8":
        assert deployment.calibration is not None
        progress(f"calibrating int8 on {len(deployment.calibration)} inputs")
        result = to_int8(result, deployment.calibration, batch=fixed_batch(model))
    verdict = None
    if deployment.transforms and providers is not None:
        verdict = check(result, module, spec, deployment, shapes, providers=providers, progress=progress,
                        fp32=model)
        metadata["archspec.deployment_check"] = json.dumps(verdict.summary(), sort_keys=True)
    helper.set_model_props(result, metadata)
    return result, verdict
