"""The `columns` attacker: find the hidden units that were pruned, revive their columns whole.

ConceptPrune's mask clusters in the columns of ff.net.2 (hidden units) whose activation rose for
the concept; in some of them most entries are pruned. A defense that fills the pruned entries
with noise leaves those columns looking unlike their hidden unit: column j of W [out, in] is
normally aligned with the unit's intact input rows (ff.net.0.proj rows j, and hidden + j for
GEGLU), which neither pruning nor the defense touches. This attacker

1. scores every column by how badly it fits its own side vectors plus a low-rank basis of the
   matrix (relative residual ||r_j||^2 / ||w_j||^2, `column_misfit`), and takes the top
   `context.share` of the columns as suspects;
2. treats the suspects as wholly unknown and predicts them from side information and the rest
   of the matrix: a ridge map from a unit's side vectors to its output column, fitted on the
   unsuspected columns (ridge, `predict_columns`);
3. retains the most confident signs (Top-K) and sets magnitudes by the attack's rule.

Without side vectors (no ff.net.0.proj in the checkpoint) it locates nothing in that layer.
Entry score for localisation: the column score, broadcast over the column.
"""
from __future__ import annotations

import torch

from revival.attack.attackers.residual import residual_scores
from revival.attack.attackers.base import LOCATORS


def column_misfit(w: torch.Tensor, side: torch.Tensor, rank: int = 32) -> torch.Tensor:
    """Per-column relative residual of the side + low-rank fit (float32 [in]). The basis is capped
    at a quarter of the rows, so that it cannot explain every column of a short matrix."""
    r = residual_scores(w, side, rank=min(rank, w.shape[0] // 4)).double()          # |r| / median |r|
    energy = (w.double() ** 2).sum(0).clamp(min=1e-30)
    return ((r ** 2).sum(0) / (energy / energy.median().clamp(min=1e-30))).float()


def predict_columns(w: torch.Tensor, side: torch.Tensor, suspects: torch.Tensor, ridge: float = 0.1) -> torch.Tensor:
    """Predict the suspected columns of W [out, in] from their side vectors [d, out, in] with a
    linear map fitted (ridge) on the other columns. Returns [out, in] float32 with the
    predictions in the suspected columns and W elsewhere."""
    return fit_column_map(w, side, suspects, ridge)[0]


def fit_column_map(w: torch.Tensor, side: torch.Tensor, suspects: torch.Tensor, ridge: float = 0.1,
                   loo: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`predict_columns`, and with `loo` the leave-one-out residuals of the map on the columns it
    was fitted on ([out, n_other] float64: each column's residual when the map is fitted without
    it, r_i / (1 - h_ii) from the ridge hat matrix; one fit, no refits). Each unit's side vector
    is normalised; the ridge is `ridge` x the mean squared norm of the fitted units' vectors.
    Solved in the primal form when there are fewer features than fitted units (the same map)."""
    x = side.double().permute(2, 0, 1).reshape(side.shape[2], -1)     # [in, d*out]
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-30)
    y = w.double().T                                                   # [in, out]
    obs = ~suspects
    xo, yo = x[obs], y[obs]
    lam = ridge * float((xo * xo).sum(1).mean())
    if xo.shape[1] < xo.shape[0]:
        a = xo.T @ xo
        a += lam * torch.eye(a.shape[0], dtype=a.dtype)
        beta = torch.linalg.solve(a, xo.T @ yo)                        # [d*out, out]
        pred = x[suspects] @ beta
        fitted = xo @ beta
        hat = (xo * torch.linalg.solve(a, xo.T).T).sum(1) if loo else None
    else:
        k = xo @ xo.T
        k += lam * torch.eye(k.shape[0], dtype=k.dtype)
        kinv_y = torch.linalg.solve(k, yo)
        pred = (x[suspects] @ xo.T) @ kinv_y
        fitted = yo - lam * kinv_y                                     # K (K + lam)^-1 y
        hat = (1.0 - lam * torch.linalg.inv(k).diagonal()) if loo else None
    out = w.double().clone()
    out[:, suspects] = pred.T
    res = None
    if loo:
        res = ((yo - fitted) / (1.0 - hat).clamp(min=1e-6)[:, None]).T    # [out, n_other]
    return out.float(), res


@LOCATORS.register("columns", "hidden units whose output column fits its side information worst, revived whole", rank=4)
def locate_columns(tensors, layers, context):
    """The `columns` attacker (`revival.attack.attackers`)."""
    from revival.attack.attackers.base import Located
    from revival.attack.matrix import side_features

    masks, scores, cols, est = {}, {}, {}, {}
    skipped = []
    for name in layers:
        w = tensors[name].float().cpu()
        side = side_features(tensors, name, tuple(w.shape))
        if side is None:
            skipped.append(name)
            masks[name] = torch.zeros(w.shape, dtype=torch.bool)
            scores[name] = torch.zeros(w.shape)
            cols[name] = torch.zeros(w.shape[1])
            continue
        side = side.float().cpu()
        c = column_misfit(w, side)
        n = max(1, int(round(context.share * w.shape[1])))
        suspects = torch.zeros(w.shape[1], dtype=torch.bool)
        suspects[torch.argsort(c, descending=True, stable=True)[:n]] = True
        cols[name] = c
        scores[name] = c[None, :].expand(w.shape).clone()
        masks[name] = suspects[None, :].expand(w.shape).clone()
        est[name] = predict_columns(w, side, suspects)
    return Located(masks, scores, estimates=est, column_scores=cols,
                   info={"share_of_columns": context.share, "no_side_information": skipped})
