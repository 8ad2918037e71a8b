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


def research_defense_seed(seed: int) -> int:
    """The defense's seed in a research run (`revival demo`, `revival experiment`, the eval-unlearn
    techniques): derived from the run's `--seed`, so the run is reproducible. Anyone who knows the
    run's seed can regenerate these fills; a release a publisher ships draws its defense's
    randomness from the operating system instead (`revival defend` without --seed)."""
    return item_seed(seed, "defense")
