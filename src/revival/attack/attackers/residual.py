"""Locating hidden pruned positions: the adaptive attacker's first step against obfuscation.

Gaussian obfuscation leaves no exact zeros, so the revival attack finds nothing. An attacker can
still look for the entries that do not fit the matrix's structure. For every column j of
W [out, in] (hidden unit j), fit W[:, j] by least squares on that unit's intact ff.net.0.proj
rows (side information, touched neither by pruning nor by the defense) and the top-`rank` left
singular vectors of W; score each entry by |residual| (over the layer's median |residual|); the
highest-scoring `fraction` of a layer are the guessed positions. On a truly structured matrix
this finds the noise (tests: AUC > 0.9); on real feed-forward weights, which are far from low
rank, it barely beats chance -- which is why the defense works.

`benchmarks/defense_locate.py` measures how well this finds the filled positions (and whether
reviving the guessed positions brings the concept back).
"""
from __future__ import annotations

import torch

from revival.errors import RevivalError
from revival.attack.attackers.base import LOCATORS


def residual_scores(w: torch.Tensor, side: torch.Tensor | None = None, *, rank: int = 32,
                    ridge: float = 1e-3, chunk: int = 1024) -> torch.Tensor:
    """|r_ij| / median |r| of the per-column fit described above; float32 [out, in]. (A layer-wide
    scale: per-column scales hide the columns where pruning, hence the noise, concentrates.)

    side: [d, out, in] side vectors (revival.attack.revive.side_features) or None."""
    if w.ndim != 2:
        raise RevivalError(f"locating needs a 2-D matrix, got shape {tuple(w.shape)}.")
    x = w.double()
    m, n = x.shape
    k = max(0, min(rank, m - 1, n))
    u = torch.linalg.svd(x, full_matrices=False)[0][:, :k] if k else x.new_zeros(m, 0)
    if side is None or side.shape[0] == 0:
        r = x - u @ (u.T @ x)                       # orthonormal basis: a projection
    else:
        if tuple(side.shape[1:]) != (m, n):
            raise RevivalError(f"side features must have shape [d, {m}, {n}], got {tuple(side.shape)}.")
        d = side.shape[0]
        p = d + k
        r = torch.empty_like(x)
        eye = torch.eye(p, dtype=x.dtype)
        for c0 in range(0, n, chunk):
            f = side[:, :, c0:c0 + chunk].double().permute(2, 1, 0)         # [nc, m, d]
            a = torch.cat([f, u.expand(f.shape[0], m, k)], 2)                # [nc, m, p]
            g = a.transpose(1, 2) @ a                                        # [nc, p, p]
            g = g + ridge * g.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * eye
            y = x[:, c0:c0 + chunk].T.unsqueeze(2)                          # [nc, m, 1]
            coef = torch.linalg.solve(g, a.transpose(1, 2) @ y)
            r[:, c0:c0 + chunk] = (y - a @ coef).squeeze(2).T
    a = r.abs()
    return (a / a.median().clamp(min=1e-30)).float()


def locate(w: torch.Tensor, fraction: float, side: torch.Tensor | None = None, *,
           rank: int = 32) -> torch.Tensor:
    """Bool mask of the `fraction` of W's entries that fit its structure worst (ties by position)."""
    if not 0.0 < fraction < 1.0:
        raise RevivalError(f"the located fraction must be in (0, 1), got {fraction}.")
    score = residual_scores(w, side, rank=rank).flatten()
    n = max(1, int(round(fraction * score.numel())))
    order = torch.argsort(score, descending=True, stable=True)[:n]
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view(w.shape)


@LOCATORS.register("residual", "entries that fit the matrix's structure worst", rank=2)
def locate_residual(tensors, layers, context):
    """The `residual` attacker (`revival.attack.attackers`): per layer, the `context.share`
    worst-fitting entries (side information + low-rank basis), scored by `residual_scores`."""
    from revival.attack.attackers.base import Located, top_fraction
    from revival.attack.matrix import side_features

    masks, scores = {}, {}
    for name in layers:
        w = tensors[name].float().cpu()
        side = side_features(tensors, name, tuple(w.shape)) if context.config.side else None
        s = residual_scores(w, None if side is None else side.float().cpu())
        scores[name] = s
        masks[name] = top_fraction(s, context.share)
    return Located(masks, scores, info={"share": context.share})
