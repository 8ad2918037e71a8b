"""Top-K Sign Retention (Zhang et al., CVPR 2026).

Of a matrix's pruned positions, keep the sign of the estimate only where the attack is most
confident -- the top `keep` fraction by |estimate| in the paper, or by any confidence score a
solver supplies -- and leave the rest at zero.
"""
from __future__ import annotations

import math

import torch

from revival.errors import RevivalError


def top_k_signs(
    estimate: torch.Tensor,
    missing: torch.Tensor,
    keep: float = 0.6,
    confidence: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signs to retain at the most confident pruned positions.

    Args:
        estimate: [out, in] completed matrix (its sign is the guess).
        missing: [out, in] bool, True at pruned positions.
        keep: fraction of pruned positions to keep, in (0, 1]; round(keep * n_pruned) are kept.
        confidence: [out, in] score to rank by (default |estimate|); ties broken by position.
    Returns:
        (kept, signs): kept [out, in] bool (a subset of `missing`), signs [out, in] float in
        {-1, 0, +1} (0 outside `kept`; an exactly-zero estimate counts as +1).
    """
    if not 0.0 < keep <= 1.0:
        raise RevivalError(f"keep must be in (0, 1], got {keep}.")
    missing = missing.bool()
    flat_idx = missing.flatten().nonzero().squeeze(1)
    est = estimate.flatten()
    score = est[flat_idx].abs() if confidence is None else confidence.flatten()[flat_idx]
    n_keep = int(math.floor(keep * flat_idx.numel() + 0.5))
    order = torch.argsort(score.float(), descending=True, stable=True)
    sel = flat_idx[order[:n_keep]]
    kept = torch.zeros_like(missing)
    kept.view(-1)[sel] = True
    signs = torch.zeros(missing.shape, dtype=torch.float32, device=missing.device)
    signs.view(-1)[sel] = torch.where(est[sel] >= 0, 1.0, -1.0).to(torch.float32)
    return kept, signs
