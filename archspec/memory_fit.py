"""Will it fit? Training-memory estimates per mode, the largest batch for a budget, and
a measurement of one real training step to check them against.

The estimate is torch-free (``archspec/format/memory.py``, each part's rule in its home). The measurement runs in a
fresh Python process (``python -m archspec.memory_fit``, a JSON request on stdin and a JSON
answer on stdout) so that nothing this process has allocated counts:

* CUDA: ``torch.cuda.max_memory_allocated`` over the measured step.
* CPU: peak resident memory (``VmHWM``) during the measured step, minus the resident
  memory just before it, plus the tensors already alive then (parameters and optimizer
  state). The process runs with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so
  that every tensor gets its own mapping and goes back to the system when freed — the
  CPU counterpart of the CUDA allocator's statistics. Without it the heap keeps freed
  blocks and resident memory runs 8–130% above what the tensors need
  (``bench/fit_accuracy.py`` reports both).

Before the measured step, one warm-up step at batch ``min(batch_size, 2)`` loads the
kernels' code and creates the optimizer state, so the measured step is one every later
step repeats; then the heap's free pages go back to the system, so that under glibc's
default malloc the step cannot reuse the warm-up's leftovers unseen.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from archspec.errors import RunError
from archspec.format.guard import check_resources
from archspec.format.memory import MODES, MemoryEstimate, Mode, Optimizer, estimate
from archspec.format.schema import Spec
from archspec.format.shapes import static_pass

_MMAP_THRESHOLD = "65536"  # bytes; glibc's default is dynamic, up to 32 MiB
_WARM_UP_BATCH = 2  # BatchNorm1d refuses a batch of one in training mode


@dataclass(frozen=True)
class ModeFit:
    """The estimate of one mode and what it answers for a budget."""

    mode: Mode
    estimate: MemoryEstimate
    largest_batch: int
    """Largest batch whose estimated peak fits the budget (0 if none does)."""


def fit(spec: Spec, *, budget: int, optimizer: Optimizer = "sgd") -> tuple[ModeFit, ...]:
    """Estimates for the naive and the memory-efficient mode against ``budget`` bytes.

    Args:
        spec: a validated spec; its stem's and blocks' own ``memory_efficient`` flags are ignored.
        budget: memory available for training, in bytes.
        optimizer: ``sgd``, ``momentum`` or ``adam``.

    Returns:
        One ``ModeFit`` per mode, naive first.
    """
    result = static_pass(spec)
    fits = []
    for mode in MODES:
        found = estimate(spec, mode=mode, optimizer=optimizer, result=result)
        fits.append(ModeFit(mode, found, found.largest_batch(budget)))
    return tuple(fits)


@dataclass(frozen=True)
class Measurement:
    """Peak memory of one real training step."""

    device: str
    """``cpu`` or ``cuda``."""
    peak: int
    """Bytes, counted as the module docstring describes."""


def measure(
    spec: Spec, *, mode: Mode, batch_size: int, optimizer: Optimizer = "sgd", malloc_default: bool = False
) -> Measurement:
    """Run one training step of ``spec`` with every dense block in ``mode``, in a fresh process.

    Args:
        spec: a validated spec.
        mode: ``naive`` or ``memory_efficient``.
        batch_size: batch of the measured step.
        optimizer: ``sgd``, ``momentum`` or ``adam``.
        malloc_default: keep glibc's dynamic mmap threshold (resident memory then
            includes the heap's retained free blocks).

    Returns:
        The device and the peak bytes.

    Raises:
        SpecError: the step would not fit this machine (resource guard).
        RunError: the step failed (a batch BatchNorm refuses…).
    """
    check_resources(spec, batch_size=batch_size)
    document = spec.model_dump(mode="json", exclude_unset=True)
    document.setdefault("defaults", {})["memory_efficient"] = mode == "memory_efficient"
    for part in (document["stem"], *document["body"]):
        part.pop("memory_efficient", None)  # the stem and every block inherit the mode measured
    request = {"spec": document, "batch_size": batch_size, "optimizer": optimizer}
    env = dict(os.environ)
    if not malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = _MMAP_THRESHOLD
    done = subprocess.run(
        [sys.executable, "-m", "archspec.memory_fit"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RunError(f"the measured training step ({mode}) failed: {lines[-1]}")
    answer = json.loads(done.stdout)
    return Measurement(answer["device"], answer["peak"])


def resident() -> int:
    """Resident bytes of this process now (Linux), for the CPU baseline."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident() -> int:
    """Peak resident bytes of this process's own memory (Linux ``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``fork`` and ``exec``, so a
    child started by a large parent (pytest with torch, timm and OpenVINO imported) reports
    at least the parent's size; that made a 87 MiB step read 166 MiB under pytest.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def _return_freed_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing),
    so that the measured step starts from a clean heap, as a first full-size step does: under
    glibc's default malloc it would otherwise reuse what the warm-up left, unseen."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _loss(kind: str, out: Any, classes: int) -> Any:
    """A training step's loss, by the head's declared ``loss``; named maps train with ``mse``."""
    import torch
    import torch.nn.functional as F

    losses = {
        # A label per sample, or per position for per-position scores (N, classes, *spatial).
        "cross_entropy": lambda: F.cross_entropy(out, torch.randint(0, classes, (out.shape[0], *out.shape[2:]),
                                                                    device=out.device)),
        "mse": lambda: F.mse_loss(out, torch.randn_like(out)),
    }
    return losses[kind]()


def _training_step(request: dict[str, Any]) -> dict[str, Any]:
    """Build, warm up, then measure one training step; runs in the child process."""
    import torch
    import torch.nn.functional as F

    from archspec.builder import build_module
    from archspec.format.load import load_spec

    result = static_pass(load_spec(request["spec"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_module(result).to(device).train()
    parameters = list(model.parameters())
    optimizer = {
        "sgd": lambda: torch.optim.SGD(parameters, lr=0.01),
        "momentum": lambda: torch.optim.SGD(parameters, lr=0.01, momentum=0.9),
        "adam": lambda: torch.optim.Adam(parameters, lr=1e-3),
    }[request["optimizer"]]()
    classes = result.out_shape[0]

    def step(batch: int) -> None:
        x = torch.randn(batch, *result.input_shape, device=device)
        out = model(x)  # (N, classes) or (N, targets), or a mapping of named outputs
        values = out.values() if isinstance(out, dict) else [out]
        loss = sum(_loss(result.head.part.loss if (output.path, output.point) == ("head", "output") else "mse",
                         value, classes) for output, value in zip(result.outputs, values))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batch = request["batch_size"]
    step(min(batch, _WARM_UP_BATCH))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(batch)
        torch.cuda.synchronize()
        return {"device": device, "peak": torch.cuda.max_memory_allocated()}
    alive = sum(p.numel() * p.element_size() for p in parameters)
    alive += sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )
    _return_freed_heap()
    before = resident()
    step(batch)
    return {"device": device, "peak": peak_resident() - before + alive}


if __name__ == "__main__":
    json.dump(_training_step(json.load(sys.stdin)), sys.stdout)
