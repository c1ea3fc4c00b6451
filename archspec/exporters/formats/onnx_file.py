"""ONNX files for the benchmark: written by ``archspec.export_onnx`` (its own verification), run here
under onnxruntime's CPU provider, as the other formats run on this machine's CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from archspec.exporters.formats.verify import Runner


def version() -> str:
    return f"onnxruntime {ort.__version__}"


def not_runnable() -> str | None:
    return None


def runner(path: Path, *, precision: str) -> Runner:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, {name: x}))

    return run
