"""CPU thread count: torch's own choice unless the user (or a test, a benchmark) pins it."""
from __future__ import annotations

import os

import torch

from revival.errors import RevivalError


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: explicit `n`, else $REVIVAL_THREADS, else torch's default
    (left untouched). Returns the number in force. RevivalError for a bad value."""
    if n is None:
        raw = os.environ.get("REVIVAL_THREADS", "").strip()
        if not raw:
            return torch.get_num_threads()
        try:
            n = int(raw)
        except ValueError:
            raise RevivalError(f"REVIVAL_THREADS must be a positive whole number, got {raw!r}.") from None
        where = "REVIVAL_THREADS"
    else:
        where = "--threads"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RevivalError(f"{where} must be at least 1, got {n}.")
    torch.set_num_threads(n)
    return n
