"""An fp32 ONNX graph made smaller: fp16 by onnxruntime's converter, int8 by its static quantizer.

Both start with onnxruntime's own pre-processing (``quant_pre_process``): its basic graph
optimisations fold every BatchNorm that directly follows a convolution into that
convolution's weights, in fp32, and shape inference annotates every tensor.

BatchNorm in fp16. In a DenseNet most norms cannot be folded: each layer normalises the
concatenation of all earlier features and a ReLU stands between the norm and the next
convolution. What folds are the stem's ``norm0`` and, with a bottleneck, each layer's
``norm2`` into its ``conv1``. The rest stay ``BatchNormalization`` nodes in fp16: on
seeded random statistics (variances in [0.5, 2]) keeping them in fp32 changed the error
relative to the largest logit from 9.0e-4 to 7.9e-4 on the tutorial and not at all on
DenseNet-121 (7.3e-4; PyTorch in fp16 against fp32), while costing two casts per norm.

int8. QDQ format, weights int8 per output channel, activations uint8 (onnxruntime's
u8s8 convolution kernels are the fast ones on x86: s8s8 ran slower than fp32 on an
AVX-512 VNNI CPU), MinMax ranges. Only ``Conv`` and ``Gemm`` are quantized: norms,
concatenations and pooling stay fp32 between them, which measured as fast as quantizing
those too and keeps the concatenated features exact.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from torch import nn

from archspec.errors import Problem, SpecError
from archspec.exporters.calibration import ArrayReader

FP16_MAX = float(np.finfo(np.float16).max)  # 65504: anything larger is inf in fp16
INT8_OPS = ("Conv", "Gemm")
# The CPU instructions that make int8 convolutions faster than fp32 ones, by their /proc/cpuinfo
# flag: without one, onnxruntime's u8s8 kernels widen to 16 bits, and on an AVX2 CPU int8 took
# 0.95-1.17× fp32's time (issue 21); docs/deployment.md has this machine's figures.
INT8_DOT_PRODUCT_FLAGS = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX",
                          "asimddp": "Arm dot product", "i8mm": "Arm int8 matrix multiply"}
NO_INT8_DOT_PRODUCT = "none"


def int8_dot_product(cpuinfo: str | None = None) -> str:
    """This CPU's integer dot-product instructions, as one phrase for reports.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read from the file when ``None`` (Linux only).

    Returns:
        The names found (``AVX-512 VNNI, AVX-VNNI, AMX``), ``none`` followed by what the CPU
        has instead (``none (AVX2)``), or ``unknown`` where there is no ``/proc/cpuinfo``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown"
    # x86 lists its extensions on a "flags" line, Arm on a "Features" line; every core repeats it.
    line = next((line for line in cpuinfo.splitlines() if line.split(":")[0].strip() in ("flags", "Features")), None)
    if line is None:
        return "unknown"
    flags = set(line.partition(":")[2].split())
    found = [name for flag, name in INT8_DOT_PRODUCT_FLAGS.items() if flag in flags]
    if found:
        return ", ".join(found)
    widest = next((name for flag, name in (("avx512bw", "AVX-512"), ("avx2", "AVX2"), ("asimd", "Arm NEON"))
                   if flag in flags), None)
    return NO_INT8_DOT_PRODUCT if widest is None else f"{NO_INT8_DOT_PRODUCT} ({widest})"


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence onnxruntime.quantization's advice, which it logs on the root logger.

    ``logging.warning`` would also give the root logger a stderr handler for good if it had
    none; a null handler prevents that while the block runs.
    """
    root = logging.getLogger()
    level, guard = root.level, logging.NullHandler()
    root.addHandler(guard)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(guard)


def _prepared(model: onnx.ModelProto, folder: Path) -> Path:
    """onnxruntime's pre-processing: BatchNorm folded into preceding convolutions, shapes inferred."""
    source, prepared = folder / "fp32.onnx", folder / "prepared.onnx"
    onnx.save(model, source)
    quant_pre_process(source, prepared, skip_symbolic_shape=True)  # symbolic shapes: for transformers
    return prepared


def _only_used_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the opset imports onnxruntime's optimiser adds for domains no node uses (training, preview…)."""
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    kept = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def check_fp16_weights(model: onnx.ModelProto) -> None:
    """Refuse weights that fp16 cannot hold (the converter would clip them to 65504).

    Raises:
        SpecError: one line naming the first such tensor and its largest value.
    """
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        largest = float(np.abs(numpy_helper.to_array(tensor)).max(initial=0.0))
        if largest > FP16_MAX:
            raise SpecError(Problem(f"fp16 overflow: weight {tensor.name} holds {largest:.3g}, beyond fp16's "
                                    f"largest value {FP16_MAX:g}", option="--precision"))


def check_fp16_activations(module: nn.Module, inputs: list[np.ndarray]) -> None:
    """Refuse a network whose values leave fp16's range on ``inputs``, naming the first module that does.

    Every node of the fp16 file stores its output in fp16, as each torch module's output here.

    Raises:
        SpecError: one line: the module, the largest value it reached, fp16's largest.
    """
    largest: dict[str, float] = {}

    def record(name: str):
        def hook(_: nn.Module, __: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.numel():
                # NaN compares false and is not refused here; the fp32 verification refuses it.
                largest[name] = max(largest.get(name, 0.0), float(output.abs().max()))
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in module.named_modules()
               if not list(m.children())]
    try:
        with torch.no_grad():
            for x in inputs:
                module(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    for name, value in largest.items():  # in the order the modules first ran
        if value > FP16_MAX:
            raise SpecError(Problem(f"fp16 overflow: {name} reaches {value:.3g} on the verification inputs, "
                                    f"beyond fp16's largest value {FP16_MAX:g}; export in fp32 or int8",
                                    option="--precision"))


def to_fp16(model: onnx.ModelProto, *, io_fp16: bool = False) -> onnx.ModelProto:
    """An fp16 copy of a float32 graph: weights and compute in fp16, BatchNorms folded where they follow a conv.

    Args:
        model: the float32 graph.
        io_fp16: make the input and output float16 too; by default they stay float32,
            with a cast at each end inside the graph.

    Raises:
        SpecError: a weight (after folding) beyond fp16's range.
    """
    with tempfile.TemporaryDirectory(prefix="archspec-fp16-") as folder, _quiet_logging():
        prepared = onnx.load(_prepared(model, Path(folder)))
    check_fp16_weights(prepared)
    converted = convert_float_to_float16(prepared, keep_io_types=not io_fp16)
    # The converter appends the input casts after the nodes that read them; onnx.checker wants order.
    OnnxModel.graph_topological_sort(converted.graph, is_deterministic=True)
    return _only_used_domains(converted)


def to_int8(model: onnx.ModelProto, calibration: np.ndarray, *, batch: int | None = None) -> onnx.ModelProto:
    """A statically quantized copy of a float32 graph, calibrated on ``calibration``.

    Args:
        model: the float32 graph, one input.
        calibration: checked inputs, ``(N, *sample_shape)`` float32 (``read_calibration``).
        batch: the batch a static graph takes; ``None`` when it is dynamic.

    Returns:
        The QDQ graph: int8 per-channel weights, uint8 activations, ranges from MinMax calibration.
    """
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="archspec-int8-") as folder, _quiet_logging():
        prepared = _prepared(model, Path(folder))
        quantized = Path(folder) / "int8.onnx"
        quantize_static(
            prepared, quantized, ArrayReader(calibration, input_name, batch),
            quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=list(INT8_OPS),
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return _only_used_domains(onnx.load(quantized))
