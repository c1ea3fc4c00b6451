"""OpenVINO IR (``.xml`` graph and ``.bin`` weights) for Intel CPUs, GPUs and NPUs: converted from
the module by ``openvino.convert_model``, run by OpenVINO's CPU plugin at f32 inference precision
(its default picks bf16 where the CPU has it, 3e-2 off). fp16 stores the weights in half precision."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.verify import Runner


def version() -> str:
    import openvino

    return f"openvino {openvino.__version__.split('-')[0]}"


def not_runnable() -> str | None:
    return None


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    import openvino

    shape = [-1 if axis in dynamic else size for axis, size in enumerate(example.shape)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice, from inside the converter
        model = openvino.convert_model(module, example_input=(example,), input=[openvino.PartialShape(shape)])
    openvino.save_model(model, str(out), compress_to_fp16=precision == "fp16")
    return tuple(dynamic.get(axis, size) for axis, size in enumerate(example.shape))


def runner(path: Path, *, precision: str) -> Runner:
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list[np.ndarray]:
        results = request.infer({0: x})
        return [np.asarray(results[output]) for output in compiled.outputs]

    return run
