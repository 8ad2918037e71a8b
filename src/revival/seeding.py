"""One seeding scheme: a seed for each item (layer, image, ...) that depends only on the run's
seed and the item's name, never on which other items run, their order or the process count."""
from __future__ import annotations

import hashlib

import torch


def item_seed(seed: int, *parts) -> int:
    """A 63-bit seed derived from (seed, *parts), e.g. item_seed(0, "down_blocks.0...ff.net.2.weight")."""
    key = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)


def item_generator(seed: int, *parts, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with item_seed(seed, *parts)."""
    return torch.Generator(device=device).manual_seed(item_seed(seed, *parts))
