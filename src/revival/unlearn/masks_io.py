"""Pruning masks on disk: a safetensors file of booleans (never pickled)."""
from __future__ import annotations

import torch

from revival.errors import RevivalError


def save_masks(masks: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None, *,
               inputs=(), overwrite: bool = True):
    """Write masks as a safetensors file of booleans (atomically; never pickles)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from revival.io import atomic_write

    tensors = {k: v.to(torch.bool).contiguous().cpu() for k, v in masks.items()}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata), inputs=inputs,
                        overwrite=overwrite)


def load_masks(path) -> dict[str, torch.Tensor]:
    """Read a boolean mask file written by `save_masks`."""
    from pathlib import Path

    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise RevivalError(f"Mask file {p} does not exist.")
    try:
        masks = load_file(str(p))
    except Exception:
        raise RevivalError(f"Mask file {p} is not a readable safetensors file.") from None
    return {k: v.to(torch.bool) for k, v in masks.items()}
