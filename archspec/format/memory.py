"""Training-memory model: what one training step keeps in memory, from the spec alone.

Three kinds of memory, all float32 (4 bytes a value):

* **Weights**: parameters, their gradients, and the optimizer's state per parameter
  (none for plain SGD, one momentum buffer for SGD with momentum, two moments for Adam).
  These do not depend on the batch size.
* **Stored activations**: the tensors autograd keeps from the forward pass for the
  backward pass, per sample. They are counted op by op, as PyTorch saves them:

  - BatchNorm saves its input; ReLU (in place) saves its output, which is the tensor the
    following convolution or linear map saves as its input; so a Norm-ReLU-Conv stage
    keeps two tensors the width of its input.
  - Max pooling saves its input and the int64 index of every output value (two floats'
    worth); average pooling saves its input.
  - Naive dense layer reading ``c`` channels: the concatenation (``c``) and its
    normalised copy (``c``); with a bottleneck of ``b = bn_size × growth_rate`` channels
    also ``b`` and ``b`` for the second stage; dropout its mask (float32 on CPU, one
    byte on CUDA, counted as float32).
    The dense block's final concatenation (its output) is saved by the part after it.
  - Memory-efficient dense layer: the code (``archspec/blocks.py``) recomputes the whole
    layer — concatenation, every Norm-ReLU-projection and dropout — in the backward pass,
    keeping only its inputs. Those inputs are the block's input and each layer's output,
    which therefore stay alive until the backward pass: ``c_in + (L - 1) × growth_rate``
    channels per block, once, instead of per layer (the block's input is not counted again
    when the part before already saves it, as an MLP stem's final ReLU does).
  - Head: the final norm's input (the last block's output, counted there) and the output
    of its non-in-place ReLU, and the pooled features. Not counted: logits and loss,
    and BatchNorm's per-channel batch statistics, which do not grow with the batch.
* **Backward working memory**, per sample: while the backward pass runs through a dense
  block it holds the gradient of the block's output and the gradients accumulated for
  each of its features (two block outputs' worth), and a memory-efficient block also
  holds one layer's recomputed activations. By then the stages after the block have
  freed theirs, so the activation peak is the larger of everything stored (end of the
  forward pass) and, for each stage, what it and the stages before it stored plus its
  working memory; "backward working" is how far that peak exceeds the stored total.

The peak of a training step is taken as weights + batch × activation peak (the input
batch counts as the stem's stored input). The model is linear in the batch size, so the
largest batch that fits a budget has a closed form. ``bench/fit_accuracy.py`` compares it with the
measured peak. This module never imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from archspec.errors import Problem, SpecError
from archspec.format.schema import ConvStem, DenseBlock, MLPStem, Part, Spec, Transition
from archspec.format.shapes import Shape, StaticPass, static_pass

BYTES_PER_VALUE = 4  # float32 parameters and activations
_INDEX_VALUES = 2  # an int64 max-pool index takes the room of two float32 values
_MASK_VALUES = 1  # dropout keeps a float32 mask on CPU (one byte on CUDA; counted as four)

Optimizer = Literal["sgd", "momentum", "adam"]
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2}
"""Values of optimizer state kept per parameter."""

Mode = Literal["naive", "memory_efficient"]
MODES: tuple[Mode, ...] = ("naive", "memory_efficient")


@dataclass(frozen=True)
class StageActivations:
    """Activation values one part of the network keeps per sample."""

    path: str
    """Where the part is in the spec: ``stem``, ``body[3]``, ``head``."""
    stored: int
    """Values saved for the backward pass."""
    working: int
    """Values the backward pass through this part holds at once besides the stored ones."""


def _spatial(shape: Shape) -> int:
    """Positions per channel: ``H × W`` for images, 1 for feature vectors."""
    return math.prod(shape[1:])


def _values(shape: Shape) -> int:
    return shape[0] * _spatial(shape)


def _stem(spec: Spec, before: Shape, after: Shape) -> int:
    stem = spec.stem
    if not isinstance(stem, ConvStem):
        # Each Linear saves its input; each in-place ReLU saves its output (the next input).
        return before[0] + sum(stem.hidden[:-1]) + (after[0] if stem.activation == "relu" else 0)
    positions = _spatial(after)
    if stem.pool == "max":
        # The convolution's output is larger than the stem's: size it before pooling.
        height, width = (
            (size + 2 * stem.padding - stem.kernel_size) // stem.stride + 1 for size in before[1:]
        )
        positions = height * width
    conv_out = stem.out_channels * positions
    stored = _values(before)  # the convolution saves the input batch
    stored += conv_out if stem.norm == "batch_norm" else 0  # BatchNorm saves its input
    if stem.pool == "max":
        stored += conv_out + _INDEX_VALUES * _values(after)  # pool input and indices
    elif stem.activation == "relu":
        stored += conv_out
    return stored


def _saves_output(part: Part) -> bool:
    """Whether a part's output is already saved by its own last op (an in-place ReLU saves
    its output), so that a memory-efficient block keeping it as an input adds nothing."""
    if isinstance(part, MLPStem):
        return part.activation == "relu"
    if isinstance(part, (ConvStem, Transition)):
        last_activation = part.activation if isinstance(part, ConvStem) else part.post_activation
        return part.pool == "none" and last_activation == "relu"
    return False


def _dense_block(
    block: DenseBlock, before: Shape, memory_efficient: bool, *, shared_input: bool
) -> tuple[int, int]:
    positions = _spatial(before)
    growth = block.growth_rate
    widths = [before[0] + index * growth for index in range(block.num_layers)]
    out_width = before[0] + block.num_layers * growth
    bottleneck = 0 if block.bn_size is None else block.bn_size * growth
    mask = _MASK_VALUES * growth if block.drop_rate > 0 else 0

    def layer(width: int) -> int:
        return 2 * width + 2 * bottleneck + mask  # cat, its norm; bottleneck, its norm

    # The block's output concatenation is saved by the norm that reads it next.
    output = out_width * positions
    working = 2 * output
    if memory_efficient:
        kept = out_width - growth - (before[0] if shared_input else 0)
        stored = kept * positions  # every layer's inputs, kept once
        working += layer(widths[-1]) * positions  # the layer being recomputed
    else:
        stored = sum(layer(width) for width in widths) * positions
    return stored + output, working


def _transition(part: Transition, before: Shape, after: Shape) -> int:
    positions = _spatial(before)
    stored = 0
    if part.norm == "batch_norm":
        stored += before[0] * positions  # normalised copy (ReLU'd in place), read by the projection
    if part.pool != "none" or part.post_activation == "relu":
        stored += after[0] * positions  # projection output, saved by the pool or the ReLU
    if part.pool == "max":
        stored += _INDEX_VALUES * _values(after)
    return stored


def _head(spec: Spec, before: Shape) -> int:
    relu = _values(before) if spec.head.activation == "relu" else 0  # not in place: a new tensor
    if len(before) == 1:
        return relu  # the linear map reads the ReLU's output
    return relu + before[0]  # pooled features, saved by the linear map


def stage_activations(spec: Spec, *, memory_efficient: bool | None = None) -> tuple[StageActivations, ...]:
    """Per-sample activation values of every part of ``spec``.

    Args:
        spec: a validated spec.
        memory_efficient: count every dense block as memory-efficient (``True``) or
            naive (``False``); ``None`` follows each block's own ``memory_efficient``.

    Returns:
        One entry per stage of the static pass, stem to head.
    """
    result = static_pass(spec)
    shapes = [result.input_shape, *(stage.out_shape for stage in result.stages)]
    entries = []
    for index, stage in enumerate(result.stages):
        before, after = shapes[index], shapes[index + 1]
        working = 0
        if stage.path == "stem":
            stored = _stem(spec, before, after)
        elif stage.path == "head":
            stored = _head(spec, before)
        else:
            part = spec.body[index - 1]
            if isinstance(part, DenseBlock):
                mode = part.memory_efficient if memory_efficient is None else memory_efficient
                previous = spec.stem if index == 1 else spec.body[index - 2]
                stored, working = _dense_block(part, before, mode, shared_input=_saves_output(previous))
            else:
                stored = _transition(part, before, after)
        entries.append(StageActivations(stage.path, stored, working))
    return tuple(entries)


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory of one spec in one mode, in bytes; linear in the batch size."""

    params: int
    """Trainable parameters."""
    optimizer: Optimizer
    """Optimizer whose state is counted."""
    activations_per_sample: int
    """Bytes of stored activations per sample."""
    working_per_sample: int
    """Bytes of backward working memory per sample."""

    @property
    def parameters(self) -> int:
        """Bytes of the parameters."""
        return self.params * BYTES_PER_VALUE

    @property
    def gradients(self) -> int:
        """Bytes of the parameters' gradients."""
        return self.params * BYTES_PER_VALUE

    @property
    def optimizer_state(self) -> int:
        """Bytes of the optimizer's state."""
        return OPTIMIZER_STATE[self.optimizer] * self.params * BYTES_PER_VALUE

    @property
    def fixed(self) -> int:
        """Bytes that do not grow with the batch."""
        return self.parameters + self.gradients + self.optimizer_state

    @property
    def per_sample(self) -> int:
        """Bytes each sample of the batch adds."""
        return self.activations_per_sample + self.working_per_sample

    def total(self, batch_size: int) -> int:
        """Estimated peak bytes of one training step at ``batch_size``."""
        return self.fixed + batch_size * self.per_sample

    def largest_batch(self, budget: int) -> int:
        """Largest batch whose estimated peak fits in ``budget`` bytes (0 if none does)."""
        return max(0, (budget - self.fixed) // self.per_sample)


def estimate(
    spec: Spec, *, mode: Mode, optimizer: Optimizer = "sgd", result: StaticPass | None = None
) -> MemoryEstimate:
    """Training-memory estimate of ``spec`` with every dense block in ``mode``.

    Args:
        spec: a validated spec.
        mode: ``naive`` stores every layer's activations; ``memory_efficient``
            recomputes them in the backward pass.
        optimizer: ``sgd`` (no state), ``momentum`` (one buffer) or ``adam`` (two).
        result: the spec's static pass, if already computed.

    Returns:
        The estimate; ``total(batch_size)`` and ``largest_batch(budget)`` answer questions.
    """
    stages = stage_activations(spec, memory_efficient=mode == "memory_efficient")
    stored = sum(s.stored for s in stages)
    params = (result or static_pass(spec)).params
    return MemoryEstimate(
        params=params,
        optimizer=optimizer,
        activations_per_sample=stored * BYTES_PER_VALUE,
        working_per_sample=(_peak(stages) - stored) * BYTES_PER_VALUE,
    )


def _peak(stages: tuple[StageActivations, ...]) -> int:
    """Most values held at once: all stored at the end of the forward pass, or, while the
    backward pass is inside a stage, what the stages up to it stored plus its working memory
    (the later stages' activations are freed by then)."""
    peak = sum(s.stored for s in stages)
    prefix = 0
    for stage in stages:
        prefix += stage.stored
        peak = max(peak, prefix + stage.working)
    return peak


def forward_activation_bytes(spec: Spec, batch_size: int) -> int:
    """Bytes the forward pass keeps for backward at ``batch_size``, in the spec's own modes."""
    return batch_size * BYTES_PER_VALUE * sum(s.stored for s in stage_activations(spec))


_UNITS = {
    "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str, *, option: str) -> int:
    """``4GiB`` → 4294967296; ``option`` (``--memory``) names the flag in the error.

    Raises:
        SpecError: the text is not a positive number with an optional unit
            (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS) or float(match.group(1)) <= 0:
        raise SpecError(
            Problem(f"expected a memory size such as 4GiB or 512MiB, got {text!r}", path=option)
        )
    return int(float(match.group(1)) * _UNITS[unit or "b"])


def format_bytes(size: float) -> str:
    """``1320702443`` → ``1.23 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} TiB"
