"""Resource guard: refuse a spec too large to allocate, before anything is allocated.

A spec is untrusted input: ``growth_rate: 100000`` validates, and building it would
try to allocate terabytes. The static pass knows the parameter count and the memory
model knows what a forward pass keeps, so both are checked first. Never imports torch.
"""

from __future__ import annotations

import os

from archspec.errors import Problem, SpecError, quoted
from archspec.format.memory import BYTES_PER_VALUE, forward_activation_bytes
from archspec.format.sizes import format_bytes
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, static_pass

DEFAULT_MAX_PARAMS = 2_000_000_000
"""More parameters than this (8 GB of float32 weights) is refused unless ``--max-params`` allows it."""
MAX_BATCH = 2**31
"""Largest batch checked (an option, bounded before any arithmetic on it): a batch this size
of the smallest network is already past any machine's memory."""


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes, or ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_resources(
    spec: Spec,
    *,
    batch_size: int = 1,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_memory: int | None = None,
    check_memory: bool = True,
    result: StaticPass | None = None,
) -> None:
    """Refuse ``spec`` if it has too many parameters or its forward pass needs too much memory.

    Args:
        spec: a validated spec.
        batch_size: batch of the forward pass whose memory is checked.
        max_params: most parameters allowed.
        max_memory: most bytes the parameters and the forward pass's stored activations
            may take; ``None`` means this machine's physical memory.
        check_memory: check the memory limit too (``validate`` checks parameters only:
            the spec may be meant for a larger machine).
        result: the spec's static pass, if already computed.

    Raises:
        SpecError: one problem per limit exceeded, with the numbers and the flag that
            raises the limit.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise SpecError(Problem(f"must be between 1 and 2**31, got {quoted(batch_size)}", option="--batch-size"))
    result = result or static_pass(spec)
    problems = []
    if result.params > max_params:
        problems.append(
            Problem(
                f"{result.params:,} parameters exceed the limit of {max_params:,}; "
                f"raise the limit with --max-params {result.params}"
            )
        )
    limit = machine_memory() if max_memory is None else max_memory
    if check_memory and limit is not None:
        weights = result.params * BYTES_PER_VALUE
        activations = forward_activation_bytes(result, batch_size)
        if weights + activations > limit:
            where = "this machine's memory" if max_memory is None else "the limit"
            problems.append(
                Problem(
                    f"parameters ({format_bytes(weights)}) and the forward pass at batch "
                    f"{batch_size} ({format_bytes(activations)}) need "
                    f"{format_bytes(weights + activations)}, more than {where} "
                    f"({format_bytes(limit)}); raise the limit with --max-memory SIZE"
                )
            )
    if problems:
        raise SpecError(problems)
