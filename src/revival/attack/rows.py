"""Whole missing rows: what a matrix cannot tell about them, and what its partner can.

Neuron deactivation zeroes whole rows (a hidden unit's input rows, a value projection's output
features). Matrix completion estimates a missing entry from the other entries of its row and
column; a row with no surviving entry has no row to learn from, so its own matrix cannot
recover it. When the layer is a feed-forward (or attention value) input linear, its partner
still holds the unit's output column (`revival.attack.partners`): a linear map from output
columns to input rows, fitted on the intact units, estimates the missing rows. The map is kept
only when it predicts the signs of held-out intact units clearly better than a coin (the lower
95% Wilson bound of the kept-sign accuracy above 0.5, counting held-out rows as the sample,
since the entries of one row are not independent); otherwise the rows are reported as not
recoverable and left at zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from revival.intervals import wilson


@dataclass
class RowEstimate:
    """The outcome for a matrix's whole missing rows.

    rows: how many rows have no surviving entry. estimated: how many were filled.
    source: "partner" (estimated from the partner's columns) or "" (none).
    validation: held-out sign accuracy of the partner map on intact units: kept (top `keep`),
        all, its Wilson 95% interval, the number of held-out entries.
    note: a sentence for the report.
    """

    rows: int
    estimated: int = 0
    source: str = ""
    validation: dict | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _ridge_map(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """B minimising ||x B - y||^2 + ridge * mean(diag(x^T x)) ||B||^2 (float64)."""
    x64, y64 = x.double(), y.double()
    g = x64.T @ x64
    lam = ridge * float(g.diagonal().mean().clamp(min=1e-30))
    return torch.linalg.solve(g + lam * torch.eye(g.shape[0], dtype=g.dtype, device=g.device), x64.T @ y64)


def _kept_accuracy(truth: torch.Tensor, est: torch.Tensor, keep: float) -> tuple[int, int, int, int]:
    """(right among kept, kept, right among all, all) sign counts, kept = top `keep` by |est|."""
    t, e = truth.flatten(), est.flatten()
    right = (t >= 0) == (e >= 0)
    n = max(1, int(round(keep * e.numel())))
    top = torch.argsort(e.abs(), descending=True, stable=True)[:n]
    return int(right[top].sum()), n, int(right.sum()), e.numel()


def estimate_unit_rows(w_in: torch.Tensor, w_out: torch.Tensor, rows: torch.Tensor, *, keep: float = 0.6,
                       ridge: float = 1e-1, folds: int = 5, seed: int = 0
                       ) -> tuple[torch.Tensor | None, RowEstimate]:
    """Estimate whole missing rows of an input linear W_in [g*hidden, dim] from its partner's
    columns W_out [dim, hidden] (unit j = column j; rows j, hidden + j).

    rows: [g*hidden] bool, the rows with no surviving entry. Returns (estimate [n_rows, dim]
    float32 for those rows in order, or None when the map does not validate; RowEstimate).
    Intact units (no zero at all in their rows) fit one map per row group g; `folds`-fold
    cross-validation over them measures the sign accuracy the map would have on missing rows.
    The estimate is rescaled to the median row norm of the intact rows.
    """
    n_rows = int(rows.sum())
    res = RowEstimate(rows=n_rows)
    g_rows, dim = w_in.shape
    hidden = w_out.shape[1]
    g = g_rows // hidden
    x_all = w_out.float().T                                   # [hidden, dim]: unit j's output column
    intact = ~(w_in == 0).any(1)                              # rows with no pruned entry
    gen = torch.Generator(device="cpu").manual_seed(seed)
    counts = [0, 0, 0, 0]
    n_rows_held = 0
    for grp in range(g):
        sl = slice(grp * hidden, (grp + 1) * hidden)
        ok = intact[sl].nonzero().squeeze(1).cpu()
        if ok.numel() < 2 * folds:
            continue
        perm = ok[torch.randperm(ok.numel(), generator=gen)]
        for f in range(folds):
            test = perm[f::folds]
            train = torch.cat([perm[i::folds] for i in range(folds) if i != f])
            b = _ridge_map(x_all[train.to(x_all.device)], w_in[sl].float()[train.to(w_in.device)], ridge)
            est = (x_all[test.to(x_all.device)].double() @ b).float()
            c = _kept_accuracy(w_in[sl].float()[test.to(w_in.device)], est, keep)
            counts = [a + b_ for a, b_ in zip(counts, c)]
            n_rows_held += test.numel()
    if counts[1] == 0:
        res.note = ("not recoverable from this matrix (no entry of these rows survives), and too few "
                    "intact units to fit a map from the partner")
        return None, res
    # entries of one row share its unit's sign and scale: count rows, not entries, as the sample
    acc = counts[0] / counts[1]
    lo, hi = wilson(int(round(acc * n_rows_held)), n_rows_held)
    res.validation = {"kept": round(counts[0] / counts[1], 4), "all": round(counts[2] / counts[3], 4),
                      "kept_interval": [round(lo, 4), round(hi, 4)], "held_out_entries": counts[1],
                      "held_out_rows": n_rows_held}
    if lo <= 0.5:
        res.note = ("not recoverable from this matrix (no entry of these rows survives); the partner's "
                    f"columns do not predict them either (held-out kept-sign accuracy {counts[0] / counts[1]:.3f}, "
                    f"95% interval {lo:.3f}-{hi:.3f})")
        return None, res
    out = torch.zeros(n_rows, dim, dtype=torch.float32, device=w_in.device)
    idx = rows.nonzero().squeeze(1)
    norms = w_in.float()[intact].norm(dim=1)
    target_norm = float(norms.median()) if norms.numel() else 1.0
    for grp in range(g):
        sl = slice(grp * hidden, (grp + 1) * hidden)
        ok = intact[sl].nonzero().squeeze(1)
        sel = (idx >= grp * hidden) & (idx < (grp + 1) * hidden)
        if not bool(sel.any()):
            continue
        b = _ridge_map(x_all[ok], w_in[sl].float()[ok], ridge)
        est = (x_all[idx[sel] - grp * hidden].double() @ b).float()
        est = est * (target_norm / est.norm(dim=1, keepdim=True).clamp(min=1e-30))
        out[sel] = est
    res.estimated, res.source = n_rows, "partner"
    res.note = (f"estimated from the partner's columns (held-out kept-sign accuracy {counts[0] / counts[1]:.3f}, "
                f"95% interval {lo:.3f}-{hi:.3f})")
    return out, res
