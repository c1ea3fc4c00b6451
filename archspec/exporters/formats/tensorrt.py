"""TensorRT engines (``.engine``) for NVIDIA GPUs: the module exported to ONNX by ``torch.onnx.export``,
parsed and built by TensorRT for this GPU (an engine runs only on the GPU model and TensorRT version
that built it), with the batch free from 1 to ``--batch-size``; spatial sizes fixed. TensorRT needs
an NVIDIA GPU to build an engine at all, so without one nothing is written, unverified or not.
Not exercised by the tests: the machines that run them have no GPU (docs/deployment.md)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archspec.exporters.formats.verify import Runner

_WORKSPACE = 1 << 30  # 1 GiB of scratch memory for the builder's tactics


def version() -> str:
    import tensorrt

    return f"tensorrt {tensorrt.__version__}"


def not_writable() -> str | None:
    """Why no engine can be built here: TensorRT builds for the GPU it runs on."""
    if not torch.cuda.is_available():
        return "TensorRT builds an engine for the NVIDIA GPU it will run on, and torch finds no CUDA GPU here"
    return None


def not_runnable() -> str | None:
    return not_writable()


def write(module: nn.Module, example: torch.Tensor, out: Path, *, precision: str, dynamic: Mapping[int, str],
          max_batch: int) -> tuple[int | str, ...]:
    import tensorrt as trt

    buffer = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"],
                                dynamic_shapes=({0: batch},) if 0 in dynamic else None)
    program.save(buffer)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(buffer.getvalue()):
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    rest = tuple(example.shape[1:])
    largest = max_batch if 0 in dynamic else example.shape[0]
    smallest = 1 if 0 in dynamic else example.shape[0]
    profile.set_shape("input", (smallest, *rest), (largest, *rest), (largest, *rest))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT could not build the engine")
    out.write_bytes(bytes(engine))
    return tuple(f"{dynamic[0]} ≤ {max_batch}" if axis == 0 and 0 in dynamic else size
                 for axis, size in enumerate(example.shape))


def runner(path: Path, *, precision: str) -> Runner:
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT]

    def run(x: np.ndarray) -> list[np.ndarray]:
        given = torch.from_numpy(x).cuda()
        context.set_input_shape("input", tuple(given.shape))
        context.set_tensor_address("input", given.data_ptr())
        results = []
        for name in outputs:
            result = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            context.set_tensor_address(name, result.data_ptr())
            results.append(result)
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT could not run the engine")
        stream.synchronize()
        return [result.cpu().numpy() for result in results]

    return run
