"""What every completion solver shares: the `Completion` result, the column-mean start, and the
held-out positions on which a solver validates its own sign accuracy."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Completion:
    """A completed matrix.

    matrix: the completion, [out, in], float (fp32 or fp64), observed entries = input.
    iterations: outer iterations run.
    confidence: [out, in] non-negative score per entry, larger = surer of the estimate's sign
        (only its values at missing positions mean anything); None = |matrix|.
    info: solver-specific facts worth reporting (e.g. whether side information was used).
    """

    matrix: torch.Tensor
    iterations: int
    confidence: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def column_mean_fill(w: torch.Tensor, missing: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy of `w` (as `dtype`, default w's) with every missing entry set to its column's mean
    over the observed entries."""
    out = w.to(dtype or w.dtype, copy=True)
    r_idx, c_idx = missing.nonzero(as_tuple=True)
    sums = out.sum(0).index_add(0, c_idx, out[r_idx, c_idx], alpha=-1)
    counts = (w.shape[0] - torch.bincount(c_idx, minlength=w.shape[1])).clamp(min=1)
    out[r_idx, c_idx] = (sums / counts.to(sums.dtype))[c_idx]
    return out


def holdout_mask(w: torch.Tensor, missing: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Observed entries that look like pruned ones, for validation.

    ConceptPrune prunes, per row, the entries with the largest |W| * activation, clustered in
    the columns whose activation rose. So hold out, per row, as many entries as a row has pruned
    on average: the largest observed |w| (jittered by a seeded log-normal factor) among the
    columns that have pruned entries.
    """
    cols = missing.any(0)
    g = torch.Generator(device="cpu").manual_seed(seed + 7919)
    jitter = torch.exp(0.3 * torch.randn(w.shape, generator=g)).to(w.device)
    score = (w.abs().float() * jitter).masked_fill(missing | ~cols[None], -1.0)
    k = max(1, int(round(float(missing.sum(1).float().mean()))))
    k = min(k, w.shape[1])
    top = score.topk(k, dim=1)
    held = torch.zeros_like(missing)
    held.scatter_(1, top.indices, top.values > 0)
    return held


def kept_sign_accuracy(truth: torch.Tensor, estimate: torch.Tensor, positions: torch.Tensor,
                       keep: float = 0.6) -> float:
    """Sign accuracy of `estimate` on the top `keep` fraction (by |estimate|) of `positions`."""
    t, e = truth[positions].float(), estimate[positions].float()
    n = max(1, int(round(keep * e.numel())))
    top = torch.argsort(e.abs(), descending=True, stable=True)[:n]
    return float(((t[top] >= 0) == (e[top] >= 0)).float().mean()) if e.numel() else 0.0


def init_basis(n: int, k: int, seed: int, device, dtype) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(n, k, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
    return torch.linalg.qr(v).Q
