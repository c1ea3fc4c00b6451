"""Core ML programs for Apple devices: converted by ``coremltools`` (which converts on Linux too) from
the ``torch.export`` program, as an ML program in fp32 or fp16 compute. A program is a ``.mlpackage``
folder; archspec writes it as one zip file, so that it can be written atomically like every other
output (``unzip model.mlpackage.zip`` gives the folder Xcode takes). Shapes are fixed to the
example's. Core ML runs models only on macOS: elsewhere the file is written only with
``write_unverified`` and is not run."""

from __future__ import annotations

import platform
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.torch_export import exported
from archspec.exporters.formats.verify import Runner

_PACKAGE = "model.mlpackage"  # the folder's name inside the zip


def version() -> str:
    import coremltools

    return f"coremltools {coremltools.__version__}"


def not_runnable() -> str | None:
    if sys.platform != "darwin":
        return f"Core ML runs models only on macOS, and this machine runs {platform.system()}"
    return None


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    import coremltools as ct

    program = exported(module, example, {}).run_decompositions({})
    model = ct.convert(program, convert_to="mlprogram",
                       compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / _PACKAGE
        model.save(str(folder))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                archive.write(file, file.relative_to(work))
    return tuple(example.shape)


def runner(path: Path, *, precision: str) -> Runner:  # pragma: no cover - macOS only
    import coremltools as ct

    work = tempfile.TemporaryDirectory()
    with zipfile.ZipFile(path) as archive:
        archive.extractall(work.name)
    model = ct.models.MLModel(str(Path(work.name) / _PACKAGE))
    spec = model.get_spec()
    input_name = spec.description.input[0].name
    output_names = [output.name for output in spec.description.output]

    def run(x: np.ndarray) -> list[np.ndarray]:
        results = model.predict({input_name: x})
        return [np.asarray(results[name]) for name in output_names]

    run.keep = work  # the folder lives as long as the runner
    return run
