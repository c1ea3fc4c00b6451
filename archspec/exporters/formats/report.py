"""What a deployment-format export did and what its verification found, as data that serialises to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FormatCase:
    """One verification input: the file's outputs against PyTorch's, relative to the largest output."""

    name: str
    """``batch 1``, ``batch 4``, ``batch 4 at 72×60``."""
    input_shape: tuple[int, ...]
    largest_output: float
    """Largest ``|PyTorch|`` over every output of the case."""
    max_abs_error: float | None
    """Largest ``|file − PyTorch|``; ``None`` when the shapes or the number of outputs differ."""
    max_relative_error: float | None
    """``max_abs_error`` over ``largest_output`` (per output, the largest of them)."""
    tolerance: float
    non_finite: int = 0
    shapes_differ: str | None = None
    """What the file returned when it is not what PyTorch returned (``(1, 9)``, PyTorch's ``(1, 10)``)."""

    @property
    def passed(self) -> bool:
        return (self.shapes_differ is None and self.non_finite == 0 and self.max_relative_error is not None
                and self.max_relative_error <= self.tolerance)

    def describe(self) -> str:
        """``batch 1 (1, 1, 32, 32): max error 3.1e-07 of the largest output 2.19 (ok)``."""
        case = f"{self.name} {tuple(self.input_shape)}"
        if self.shapes_differ is not None:
            return f"{case}: {self.shapes_differ} (shapes differ)"
        verdict = "ok" if self.passed else f"outside {self.tolerance:g}"
        if self.non_finite:
            verdict += f", {self.non_finite} outputs not finite"
        return (f"{case}: max error {_number(self.max_relative_error)} of the largest output "
                f"{self.largest_output:.3g} ({verdict})")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


@dataclass(frozen=True)
class FormatTiming:
    """Milliseconds per batch in the format's runtime: the verification run of that batch."""

    batch: int
    input_shape: tuple[int, ...]
    milliseconds: float


@dataclass(frozen=True)
class FormatCheck:
    """The file run in its own runtime against PyTorch on every case."""

    runtime: str
    version: str
    tolerance: float
    cases: tuple[FormatCase, ...]
    error: str | None = None
    """Why the runtime could not load or run the file; the cases before it are kept."""
    latency: tuple[FormatTiming, ...] = ()

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.cases) and all(case.passed for case in self.cases)

    @property
    def max_relative_error(self) -> float | None:
        return max((c.max_relative_error for c in self.cases if c.max_relative_error is not None), default=None)

    def worst(self) -> str:
        """The error, or the cases that failed, in one line."""
        return self.error or "; ".join(case.describe() for case in self.cases if not case.passed)


@dataclass(frozen=True)
class FormatReport:
    """Everything one ``archspec.export(format=...)`` call decided and measured (ONNX has ``ExportReport``)."""

    format: str
    spec_name: str
    output: str
    files: tuple[str, ...]
    """Every file written: the output and its siblings (OpenVINO's ``.bin``)."""
    params: int
    weights: str | None
    precision: str
    input_shape: tuple[int | str, ...]
    """The file's input dims; names (``batch``, ``height``) are dynamic, numbers fixed."""
    fixed_shapes: str | None
    """What the format fixes (``batch and spatial size``), or ``None`` when all stay dynamic."""
    file_bytes: int
    """All files together."""
    versions: dict[str, str]
    written: bool
    verification: FormatCheck | None
    """``None`` when the runtime cannot run here and the file was written unverified."""
    not_run: str | None = None
    """Why the file was not run, in words (Core ML off macOS, TensorRT without a GPU)."""
    random_state: FormatCheck | None = None
    """The same conversion of a copy with seeded random norm statistics, affine values and biases,
    when the module's own held their initial values (fresh weights), which hide norm and bias mistakes."""
    initial_values: str | None = None
    """What held its initial values in the module (``21 of 21 norms and 1 of 1 biases``)."""

    @property
    def passed(self) -> bool:
        return all(check is None or check.passed for check in (self.verification, self.random_state))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("verification", "random_state"):
            check = getattr(self, key)
            if check is not None:
                data[key]["passed"] = check.passed
                for case, result in zip(data[key]["cases"], check.cases):
                    case["passed"] = result.passed
        data["passed"] = self.passed
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
