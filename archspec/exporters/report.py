"""What an export did and what its verification found, as data that serialises to JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    """Elementwise bound ``|onnx - torch| <= atol + rtol * |torch|`` (``numpy.allclose``)."""

    rtol: float
    atol: float


# fp32 through a different runtime reorders sums; DenseNet-201 logits stay well inside this.
FP32_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-4)


@dataclass(frozen=True)
class CaseResult:
    """One verification input: its shape and how far onnxruntime landed from PyTorch."""

    name: str
    """``batch 1``, ``batch 4``, ``batch 4 at 168×140``."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    """What onnxruntime returned; a case fails when it differs from ``expected_shape``, whatever the values."""
    expected_shape: tuple[int, ...]
    """What PyTorch returned."""
    max_abs_error: float | None
    """Largest ``|onnx - torch|`` over the elements finite in both; ``None`` when the shapes differ or none is."""
    max_rel_error: float | None
    """Largest ``|onnx - torch| / |torch|``; large where PyTorch's output is near zero, where atol governs."""
    outside_tolerance: int
    """How many output elements break the tolerance: NaN and infinities always do, all when the shapes differ."""
    non_finite: int
    """How many output elements are NaN or infinite in either output."""
    elements: int
    """Elements of PyTorch's output."""

    @property
    def passed(self) -> bool:
        return self.outside_tolerance == 0 and tuple(self.output_shape) == tuple(self.expected_shape)

    def describe(self) -> str:
        """One line: the case and its errors."""
        case = f"{self.name} {tuple(self.input_shape)}"
        if tuple(self.output_shape) != tuple(self.expected_shape):
            return (f"{case}: output shape {tuple(self.output_shape)}, PyTorch's {tuple(self.expected_shape)} "
                    f"(shapes differ)")
        verdict = "ok" if self.passed else f"{self.outside_tolerance} of {self.elements} outputs outside tolerance"
        if self.non_finite:
            verdict += f", {self.non_finite} not finite"
        return (f"{case}: max abs error {_number(self.max_abs_error)}, "
                f"max rel error {_number(self.max_rel_error)} ({verdict})")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@dataclass(frozen=True)
class Latency:
    """How long onnxruntime took for one batch: the verification run of that batch, timed."""

    provider: str
    """The provider the session ran on first (``CUDAExecutionProvider`` or ``CPUExecutionProvider``)."""
    batch: int
    input_shape: tuple[int, ...]
    milliseconds: float
    """Wall time of that ``session.run`` call."""

    def describe(self) -> str:
        """``batch 4 201.3 ms``."""
        return f"batch {self.batch} {self.milliseconds:.1f} ms"


class _Checked:
    """What every check over cases answers: whether it passed, and which cases did not."""

    cases: tuple
    error: str | None

    @property
    def passed(self) -> bool:
        return self.error is None and all(case.passed for case in self.cases)

    @property
    def failures(self) -> tuple:
        return tuple(case for case in self.cases if not case.passed)


@dataclass(frozen=True)
class VerifyReport(_Checked):
    """The onnxruntime run: which provider really ran, the tolerance, every case."""

    provider_requested: str
    """``auto``, ``cuda`` or ``cpu``."""
    providers: tuple[str, ...]
    """What ``session.get_providers()`` returned: the providers that actually ran."""
    cuda_unused_reason: str | None
    """Why CUDA did not run, when it did not (``None`` when it ran)."""
    tolerance: Tolerance
    cases: tuple[CaseResult, ...]
    error: str | None = None
    """Why onnxruntime could not load or run the file; the cases before it are kept."""
    latency: tuple[Latency, ...] = ()
    """Milliseconds per batch at batch 1 and at the larger verification batch (one per timed case)."""

    def summary(self) -> dict[str, Any]:
        """The short form stored in the ONNX file's metadata."""
        return {
            "passed": self.passed,
            "provider": self.providers[0] if self.providers else None,
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,
            "max_abs_error": _largest(case.max_abs_error for case in self.cases),
            "max_rel_error": _largest(case.max_rel_error for case in self.cases),
            "cases": [case.name for case in self.cases],
            "error": self.error,
        }


def _largest(values: Iterable[float | None]) -> float | None:
    """The largest of the errors that could be measured."""
    return max((value for value in values if value is not None), default=None)


@dataclass(frozen=True)
class RandomStateCheck:
    """The same emission verified again, on a copy of the module with seeded random norm
    statistics, affine values and biases: run when the module's own still hold their initial
    values, under which a dropped norm, a swapped shift and mean or a lost bias go unseen."""

    initial_values: str
    """What held its initial values in the module: ``21 of 21 norms and 1 of 1 biases``."""
    seed: int
    """The seed of ``archspec.exporters.random_state.randomize_state``."""
    verification: VerifyReport
    """The copy's graph under onnxruntime against the copy, on the same cases and tolerance."""

    @property
    def passed(self) -> bool:
        return self.verification.passed

    def describe(self) -> str:
        """One line: what ran, and the largest errors."""
        cases = self.verification.cases
        return (f"verified again with seeded random norm statistics, affine values and biases (seed {self.seed}; "
                f"{self.initial_values} held their initial values): {len(cases)} cases, "
                f"max abs error {_number(_largest(c.max_abs_error for c in cases))}, "
                f"max rel error {_number(_largest(c.max_rel_error for c in cases))}"
                f"{'' if self.passed else ' (outside tolerance)'}")


@dataclass(frozen=True)
class RuntimeCheck(_Checked):
    """The same verification cases run in another runtime (OpenCV DNN, OpenVINO, onnx2torch)."""

    runtime: str
    cases: tuple[CaseResult, ...]
    error: str | None = None
    """Why the runtime could not load or run the file; the cases before it are kept."""

    def describe(self) -> str:
        """``verified in openvino: 3 cases, max abs error 1.2e-06, max rel error 3e-05``."""
        if self.error is not None:
            return f"{self.runtime}: {self.error}"
        return (f"verified in {self.runtime}: {len(self.cases)} cases, "
                f"max abs error {_number(_largest(c.max_abs_error for c in self.cases))}, "
                f"max rel error {_number(_largest(c.max_rel_error for c in self.cases))}"
                f"{'' if self.passed else ' (outside tolerance)'}")


# ---- deployment files (fp16, int8, baked preprocessing): checked against the fp32 module ----


@dataclass(frozen=True)
class DeploymentTolerance:
    """What a converted file must meet, against the fp32 PyTorch module on every case."""

    max_relative_error: float | None
    """Largest ``|file − torch|`` over the largest ``|torch|`` of the case; ``None``: not judged."""
    min_top1_agreement: float | None = None
    """Classifiers in int8: the share of inputs whose arg-max class agrees; ``None``: not judged."""

    def describe(self) -> str:
        parts = []
        if self.max_relative_error is not None:
            parts.append(f"max error ≤ {self.max_relative_error:g} of the largest output")
        if self.min_top1_agreement is not None:
            parts.append(f"top-1 agreement ≥ {self.min_top1_agreement:.0%} on the calibration inputs")
        return ", ".join(parts)


# fp32 with the normalisation baked in: one Sub and one Div more than PyTorch's arithmetic.
BAKED_FP32_TOLERANCE = DeploymentTolerance(max_relative_error=1e-4)
# fp16 keeps 11 significant bits (4.9e-4 relative); the tutorial and DenseNet-121 land near
# 1e-3 of the largest logit in PyTorch's own fp16, so 1e-2 leaves a factor of ten.
FP16_TOLERANCE = DeploymentTolerance(max_relative_error=1e-2)
# int8 rounds every activation to 1 of 256 steps of its calibrated range. Classifiers are judged by
# their decisions on the calibration inputs and, like regressors, by their error relative to the
# largest fp32 output on every case: a random network picks the same class for nearly every input,
# so agreement alone passed a file calibrated on inputs scaled by 0.05 (0.57 of the largest logit
# off on the tutorial, 0.27 on DenseNet-BC-100). Good files measured 1.2e-2 to 1.8e-2 (tutorial,
# DenseNet-BC-100; docs/deployment.md); 0.1 leaves a factor of five, and is the regressors' bound.
INT8_CLASSIFIER_TOLERANCE = DeploymentTolerance(max_relative_error=0.1, min_top1_agreement=0.9)
INT8_REGRESSOR_TOLERANCE = DeploymentTolerance(max_relative_error=0.1)


@dataclass(frozen=True)
class DeploymentCase:
    """One input batch: how far the converted file landed from the fp32 PyTorch module."""

    name: str
    input_shape: tuple[int, ...]
    largest_output: float
    """Largest ``|torch|``: the scale the error is measured against."""
    max_abs_error: float | None
    """Largest ``|file − torch|`` over the finite elements; ``None`` when the shapes differ."""
    relative_error: float | None
    """``max_abs_error / largest_output``."""
    top1_agreement: float | None
    """Classifiers: the share of inputs whose arg-max class is PyTorch's; ``None`` for regressors."""
    non_finite: int
    """Output elements NaN or infinite in the file's output (PyTorch's are checked finite first)."""
    passed: bool

    def describe(self) -> str:
        """``batch 4 (4, 1, 96, 96): max error 6.6e-04 of the largest output 1.66, top-1 agreement 100% (ok)``."""
        if self.max_abs_error is None:
            return f"{self.name} {self.input_shape}: output shape differs from PyTorch's"
        agreement = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        broken = f", {self.non_finite} not finite" if self.non_finite else ""
        return (f"{self.name} {self.input_shape}: max error {self.relative_error:.2g} of the largest output "
                f"{self.largest_output:.3g}{agreement}{broken} ({'ok' if self.passed else 'FAILED'})")


# Where the CPU has integer dot-product instructions, an int8 file should take at most this share of
# the fp32 file's time (issue 14's target); without them int8 may well be slower.
INT8_SPEED_TARGET = 0.9


@dataclass(frozen=True)
class SpeedComparison:
    """The converted file's time per batch against the fp32 file's, measured in turn on one input."""

    provider: str
    batch: int
    input_shape: tuple[int, ...]
    milliseconds: float
    """The converted file's median wall time of ``session.run``."""
    fp32_milliseconds: float
    """The fp32 graph's median, on the same input, same provider and session options."""
    rounds: int
    """Timed runs of each file, alternating, after one warm-up run each."""
    cpu_int8_dot_product: str
    """The CPU's integer dot-product instructions (``AVX-512 VNNI, AMX``), ``none (AVX2)`` or ``unknown``."""
    target: float | None
    """At most this share of fp32's time where the CPU has them (0.9); ``None`` where it has none."""

    @property
    def ratio(self) -> float:
        return self.milliseconds / self.fp32_milliseconds

    def lines(self, precision: str) -> list[str]:
        """The measurement, and where the converted file is not faster, that in words."""
        target = "" if self.target is None else f", target ≤ {self.target:g}×"
        lines = [f"{precision} latency on {self.provider}: batch {self.batch} {self.milliseconds:.1f} ms, "
                 f"fp32 {self.fp32_milliseconds:.1f} ms: {self.ratio:.2f}× (median of {self.rounds}{target}; "
                 f"CPU integer dot product: {self.cpu_int8_dot_product})"]
        if self.ratio >= 1:
            why = ("this CPU has no integer dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX)"
                   if self.target is None else f"although this CPU has {self.cpu_int8_dot_product}")
            lines.append(f"the {precision} file is not faster than fp32 on this machine ({self.ratio:.2f}× its time): "
                         f"{why}; it is smaller, not quicker, here")
        elif self.target is not None and self.ratio > self.target:
            lines.append(f"the {precision} file is faster than fp32 here, but misses the {self.target:g}× target "
                         f"for a CPU with {self.cpu_int8_dot_product}")
        return lines


@dataclass(frozen=True)
class DeploymentCheck(_Checked):
    """The converted file against the fp32 PyTorch module: precision, inputs, tolerance, every case."""

    precision: str
    io_dtype: str
    """``float32`` or ``float16``: the file's input and output."""
    preprocess_baked: bool
    inputs: str
    """Where the inputs came from: seeded normal, seeded uniform in [0, 1), or the calibration file."""
    tolerance: DeploymentTolerance
    providers: tuple[str, ...]
    """What ``session.get_providers()`` returned."""
    cases: tuple[DeploymentCase, ...]
    error: str | None = None
    """Why onnxruntime could not load or run the file."""
    speed: SpeedComparison | None = None
    """int8: its time per batch against the fp32 graph's on this machine, and the CPU's int8 support."""

    def summary(self) -> dict[str, Any]:
        """The short form stored in the file's metadata."""
        return {
            "passed": self.passed,
            "precision": self.precision,
            "io": self.io_dtype,
            "preprocess_baked": self.preprocess_baked,
            "inputs": self.inputs,
            "provider": self.providers[0] if self.providers else None,
            "tolerance": self.tolerance.describe(),
            "max_relative_error": max((c.relative_error for c in self.cases if c.relative_error is not None),
                                      default=None),
            "min_top1_agreement": min((c.top1_agreement for c in self.cases if c.top1_agreement is not None),
                                      default=None),
            "error": self.error,
            **({} if self.speed is None else {"speed_vs_fp32": round(self.speed.ratio, 3),
                                              "cpu_int8_dot_product": self.speed.cpu_int8_dot_product}),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        if self.speed is not None:
            data["speed"]["ratio"] = self.speed.ratio
        return data


@dataclass(frozen=True)
class ExportReport:
    """Everything one ``export_onnx`` call decided and measured."""

    spec_name: str
    spec_sha256: str
    """sha256 of the spec's canonical JSON (also stored in the file)."""
    output: str
    params: int
    weights: str | None
    """The weights file loaded, or ``None`` for a freshly initialised network."""
    exporter: str
    """``archspec`` (the graph written from the spec), or with ``exporter="torch"``: ``dynamo``
    (``torch.onnx.export(dynamo=True)``) or ``torchscript`` (its fallback)."""
    exporter_fallback_reason: str | None
    opset: int
    input_name: str
    output_names: tuple[str, ...]
    """The graph's outputs: the head's (``logits``, ``prediction``) or the spec's named ``outputs``."""
    input_shape: tuple[int | str, ...]
    """The graph's input dims; names (``batch``, ``height``, ``width``) are dynamic."""
    file_bytes: int
    versions: dict[str, str]
    checker: str
    """``passed``, or why ``onnx.checker.check_model(full_check=True)`` rejected the file."""
    written: bool
    """Whether the file is at ``output``: false when the checker or verification failed."""
    verification: VerifyReport | None
    """``None`` when run with ``verify=False``."""
    precision: str = "fp32"
    """``fp32``, ``fp16`` or ``int8``: the file written."""
    deployment: DeploymentCheck | None = None
    """The fp16, int8 or baked file against the fp32 module (its tolerance, errors, agreement);
    ``None`` for a plain fp32 file, or with ``verify=False``."""
    runtimes: tuple[RuntimeCheck, ...] = ()
    """The fp32 graph in each runtime named by ``verify_with``, on the verification cases."""
    random_state: RandomStateCheck | None = None
    """The verification repeated with seeded random norm state and biases, when the module's own
    held their initial values (a fresh network); ``None`` when they did not (loaded weights),
    with ``verify=False``, or with ``exporter="torch"`` (torch's tracing, not archspec's emitters)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for check, result in zip(data["runtimes"], self.runtimes):
            check["passed"] = result.passed
        if self.verification is not None:
            data["verification"]["passed"] = self.verification.passed
            for case, result in zip(data["verification"]["cases"], self.verification.cases):
                case["passed"] = result.passed
        if self.deployment is not None:
            data["deployment"]["passed"] = self.deployment.passed
            if self.deployment.speed is not None:
                data["deployment"]["speed"]["ratio"] = self.deployment.speed.ratio
        if self.random_state is not None:
            data["random_state"]["passed"] = self.random_state.passed
            data["random_state"]["verification"]["passed"] = self.random_state.passed
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


class VerificationError(Exception):
    """The exported file did not match the PyTorch module; nothing was written at the output.

    Attributes:
        report: the full report, with every case's errors.
    """

    def __init__(self, message: str, report: ExportReport):
        super().__init__(message)
        self.report = report
