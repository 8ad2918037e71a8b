"""CPU thread count, chosen deliberately (see benchmarks/threads.py)."""
from __future__ import annotations

import os

import torch


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: explicit `n`, else $REVIVAL_THREADS, else 1."""
    if n is None:
        n = int(os.environ.get("REVIVAL_THREADS", "1"))
    if n < 1:
        from .errors import RevivalError

        raise RevivalError(f"--threads must be at least 1, got {n}.")
    torch.set_num_threads(n)
    return n
