"""One torch thread for the export tests: two test workers share two cores.

Oversubscribed, torch's OpenMP threads spin-wait on each other: on a busy two-core machine
the tutorial's eager forward took 1.4-2.2 s with two threads and 0.03-0.09 s with one. The
exports' verification runs that forward for every case.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Autouse in every module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
