"""LiteRT (``.tflite``, formerly TensorFlow Lite) for Android and microcontrollers: converted by
``litert_torch.convert``, run by ``ai_edge_litert``'s interpreter. Shapes are fixed to the
example's (batch ``--batch-size``, default 1; the declared input size): a LiteRT file is
compiled for one shape. No 3D networks: litert-torch 0.10's converter aborts the process on
one (measured), so they are refused before converting."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.verify import Runner


def version() -> str:
    from importlib.metadata import version as installed

    return f"litert-torch {installed('litert-torch')}, ai-edge-litert {installed('ai-edge-litert')}"


def not_runnable() -> str | None:
    return None


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    import litert_torch

    litert_torch.convert(module, (example,)).export(str(out))
    return tuple(example.shape)


def runner(path: Path, *, precision: str) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run(x: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(output["index"])) for output in outputs]

    return run
