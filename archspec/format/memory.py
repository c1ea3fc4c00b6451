"""Training-memory model: what one training step keeps in memory, from the spec alone.

Three kinds of memory, all float32 (4 bytes a value):

* **Weights**: parameters, their gradients, and the optimizer's state per parameter
  (none for plain SGD, one momentum buffer for SGD with momentum, two moments for Adam).
  These do not depend on the batch size.
* **Stored activations**: the tensors autograd keeps from the forward pass for the
  backward pass, per sample. They are counted op by op, as PyTorch saves them, by each
  part's own rule (``stored_activations`` in its home under ``parts/``):

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
  - Memory-efficient dense block (shared storage, ``archspec/blocks.py``): the block's
    input and every layer's new channels are written into one buffer, its output, which the
    part after it saves anyway; nothing else is kept. Backward recomputes one layer at a
    time from a contiguous copy of its input.
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
  A part that reads a skip (segmentation) hands the skip its gradient, which is held
  through every stage between the reader and the skip's own stage (``skip_gradients``).
  A tensor passed from one part to the next is counted once, by the part that makes it
  (a dense block counts its output; a transposed convolution or a head does not count
  its input again).

The peak of a training step is taken as weights + batch × activation peak (the input
batch counts as the stem's stored input). The model is linear in the batch size, so the
largest batch that fits a budget has a closed form. ``bench/fit_accuracy.py`` compares it with the
measured peak. This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archspec.format.parts.base import values
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, static_pass

BYTES_PER_VALUE = 4  # float32 parameters and activations

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


def stage_activations(
    result: StaticPass, *, memory_efficient: bool | None = None
) -> tuple[StageActivations, ...]:
    """Per-sample activation values of every stage, each counted by its part's own rule.

    Args:
        result: a spec's static pass.
        memory_efficient: count every dense block as memory-efficient (``True``) or
            naive (``False``); ``None`` follows each block's own ``memory_efficient``.

    Returns:
        One entry per stage, stem to head.
    """
    entries = []
    for stage in result.stages:
        stored, working = stage.part.stored_activations(stage, memory_efficient)
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
    result = result or static_pass(spec)
    stages = stage_activations(result, memory_efficient=mode == "memory_efficient")
    stored = sum(s.stored for s in stages)
    params = result.params
    return MemoryEstimate(
        params=params,
        optimizer=optimizer,
        activations_per_sample=stored * BYTES_PER_VALUE,
        working_per_sample=(_peak(stages, skip_gradients(result)) - stored) * BYTES_PER_VALUE,
    )


def skip_gradients(result: StaticPass) -> tuple[int, ...]:
    """Per stage, the values of skip gradients held while the backward pass is inside it.

    The backward pass of a part that reads an earlier map (a concatenation, a U-Net decoder
    block) hands that map its gradient, which waits until the backward pass reaches the map's
    own stage, where it is added to the gradient from the main path: it is held through every
    stage in between. A map the spec names as an output gets its gradient from the loss, at
    the start of the backward pass, and holds it from the last stage back to its own.
    """
    index = {stage.path: number for number, stage in enumerate(result.stages)}
    held = [0] * len(result.stages)
    waiting = [(reader, path, shape) for reader, stage in enumerate(result.stages)
               for (path, _point), shape in zip(stage.reads, stage.skips)]
    if result.named:
        waiting += [(len(result.stages), output.path, output.shape) for output in result.outputs
                    if (output.path, output.point) != ("head", "output")]
    for reader, path, shape in waiting:
        for between in range(index[path] + 1, reader):
            held[between] += values(shape)
    return tuple(held)


def _peak(stages: tuple[StageActivations, ...], skips: tuple[int, ...] | None = None) -> int:
    """Most values held at once: all stored at the end of the forward pass, or, while the
    backward pass is inside a stage, what the stages up to it stored plus its working memory
    and the skip gradients waiting for an earlier stage (the later stages' activations are
    freed by then)."""
    peak = sum(s.stored for s in stages)
    prefix = 0
    for stage, waiting in zip(stages, skips or (0,) * len(stages)):
        prefix += stage.stored
        peak = max(peak, prefix + stage.working + waiting)
    return peak


def forward_activation_bytes(result: StaticPass, batch_size: int) -> int:
    """Bytes the forward pass keeps for backward at ``batch_size``, in the spec's own modes."""
    return batch_size * BYTES_PER_VALUE * sum(s.stored for s in stage_activations(result))
