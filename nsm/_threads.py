"""``one_thread()``: run a CPU preprocessing step with one intra-op thread, then restore the setting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Subgraph extraction and PageRank are long sequences of small tensor operations: more intra-op
    threads add synchronisation per operation, and on a shared, oversubscribed CPU their spin-waits
    made both 10-20x slower (measured on the project's 2-core machine under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
