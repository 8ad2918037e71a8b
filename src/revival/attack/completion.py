"""Matrix completion: estimate the pruned (zeroed) entries of a weight matrix.

The revival attack (Zhang et al., "Roots Beneath the Cut", CVPR 2026) treats the pruned
positions of a weight matrix W [out, in] as missing entries and fills them by low-rank
matrix completion; the sign of each estimate is the attack's guess of the erased weight's sign.

Solvers (all share one signature, see `SOLVERS`):

- ``regress`` (default): per-column least squares of each column's observed entries on
  the same hidden unit's intact input-projection rows (side information, see
  `revive.side_features`) plus a damped low-rank basis; predicts the missing rows. Fast
  (a thin randomized SVD plus tiny per-column solves) and, on real pretrained FFN weights,
  far more sign-accurate than low-rank completion alone: a hidden unit's output column is
  strongly aligned (with a per-unit sign and scale) with its own input row.

- ``svt``: the paper's reference recipe, for parity. float64; missing entries start at the
  column mean of the observed ones; every iteration a FULL SVD, singular values shrunk by
  tau = the smallest singular value, rebuild, observed entries restored; at most `max_iters`
  (500) iterations or relative change < `tol` (1e-5); no rank cap.
- ``softimpute``: SoftImpute (Mazumder, Hastie & Tibshirani 2010) restricted to a rank
  `rank` subspace found by warm-started block power iteration, so each iteration costs two
  thin matmuls instead of a full SVD. lam (the soft threshold) defaults to the (rank+1)-th
  singular value of the column-mean-filled matrix.

Every solver returns a :class:`Completion`: the completed matrix (observed entries equal to
the input), the iterations it ran and a per-entry confidence (larger = surer of the sign).

Example::

    >>> w = torch.randn(60, 4) @ torch.randn(4, 80)
    >>> missing = torch.rand(60, 80) < 0.1
    >>> out = complete(w.masked_fill(missing, 0), missing, solver="softimpute", rank=8)
    >>> out.matrix.shape, out.iterations > 0
    (torch.Size([60, 80]), True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import RevivalError


@dataclass
class Completion:
    """A completed matrix.

    matrix: the completion, [out, in], float (fp32 or fp64), observed entries = input.
    iterations: outer iterations run.
    confidence: [out, in] non-negative score per entry; larger = surer of the estimate's sign
        (only its values at missing positions mean anything).
    """

    matrix: torch.Tensor
    iterations: int
    confidence: torch.Tensor


def column_mean_fill(w: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Copy of `w` with every missing entry set to its column's mean over observed entries."""
    obs = (~missing).to(w.dtype)
    counts = obs.sum(0)
    means = (w * obs).sum(0) / counts.clamp(min=1)
    return torch.where(missing, means.expand_as(w), w)


# --------------------------------------------------------------------------- reference recipe
def svt(
    w: torch.Tensor,
    missing: torch.Tensor,
    *,
    max_iters: int = 500,
    tol: float = 1e-5,
    **_: object,
) -> Completion:
    """The paper's reference recipe (full SVD each iteration, tau = smallest singular value).

    Args:
        w: [out, in] weights (missing entries' values are ignored).
        missing: [out, in] bool, True at pruned positions.
        max_iters: iteration cap (500 in the reference).
        tol: stop when ||X_new - X|| / ||X|| < tol (1e-5 in the reference).
    Runs in float64 on w's device. Slow: one full SVD per iteration.
    """
    x_obs = w.to(torch.float64)
    x = column_mean_fill(x_obs, missing)
    it = 0
    for it in range(1, max_iters + 1):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        s = (s - s[-1]).clamp(min=0)
        x_new = (u * s) @ vh
        x_new = torch.where(missing, x_new, x_obs)
        change = torch.linalg.norm(x_new - x) / torch.linalg.norm(x).clamp(min=1e-300)
        x = x_new
        if change < tol:
            break
    return Completion(x, it, x.abs())


# --------------------------------------------------------------------------- fast default
def _init_basis(n: int, k: int, seed: int, device, dtype) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(n, k, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
    return torch.linalg.qr(v).Q


def _top_singular(x: torch.Tensor, k: int, seed: int, power: int = 4) -> torch.Tensor:
    """Approximate top-(k) singular values of x (randomized, seeded)."""
    v = _init_basis(x.shape[1], k, seed, x.device, x.dtype)
    for _ in range(power):
        q = torch.linalg.qr(x @ v).Q
        v = torch.linalg.qr(x.T @ q).Q
    return torch.linalg.svdvals(x @ v)


def softimpute(
    w: torch.Tensor,
    missing: torch.Tensor,
    *,
    rank: int = 96,
    lam: float | None = None,
    max_iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **_: object,
) -> Completion:
    """Rank-restricted SoftImpute with warm-started subspace iteration.

    Each iteration: X = observed + current estimate at missing; one block power step on the
    previous right basis V (X V -> QR -> X^T Q -> small SVD), soft-threshold the singular
    values by lam, rebuild only what is needed, refill the missing entries.

    Args:
        rank: subspace size (cap on the rank of the estimate).
        lam: soft threshold; None -> the (rank+1)-th largest singular value of the
            column-mean-filled matrix (so the threshold scales with the matrix and the
            rank-th component survives).
        max_iters, tol: stop after max_iters or when the missing entries' relative change < tol.
        seed: seeds the initial random basis.
        dtype: compute dtype (float32 default).
    """
    m, n = w.shape
    k = int(min(rank, m, n))
    x_obs = w.to(dtype)
    x = column_mean_fill(x_obs, missing)
    if lam is None:
        sv = _top_singular(x, min(k + 8, m, n), seed)
        lam = float(sv[min(k, sv.numel() - 1)])
    v = _init_basis(n, k, seed, x.device, dtype)
    # A few plain power steps so the first shrink acts on a good basis.
    for _ in range(3):
        q = torch.linalg.qr(x @ v).Q
        v = torch.linalg.qr(x.T @ q).Q
    miss_idx = missing.nonzero(as_tuple=True)
    prev = x[miss_idx]
    it = 0
    for it in range(1, max_iters + 1):
        q = torch.linalg.qr(x @ v).Q                      # [m, k]
        b = q.T @ x                                        # [k, n]
        ub, s, vbh = torch.linalg.svd(b, full_matrices=False)
        s = (s - lam).clamp(min=0)
        left = q @ (ub * s)                                # [m, k]
        v = vbh.T                                          # [n, k]
        est = (left[miss_idx[0]] * v[miss_idx[1]]).sum(1)  # only the missing entries
        x[miss_idx] = est
        change = torch.linalg.norm(est - prev) / torch.linalg.norm(est).clamp(min=1e-30)
        prev = est
        if change < tol:
            break
    return Completion(x, it, x.abs())


def _left_basis(x: torch.Tensor, k: int, seed: int, power: int = 4,
                oversample: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left singular vectors [m, k] and values [k] of x (seeded randomized subspace iteration)."""
    m, n = x.shape
    q = min(k + oversample, m, n)
    v = _init_basis(n, q, seed, x.device, x.dtype)
    for _ in range(power):
        u = torch.linalg.qr(x @ v).Q
        v = torch.linalg.qr(x.T @ u).Q
    u = torch.linalg.qr(x @ v).Q
    ub, sv, _ = torch.linalg.svd(u.T @ x, full_matrices=False)
    return (u @ ub)[:, :k], sv[:k]


def _column_buckets(pos: torch.Tensor, nc: int) -> list[tuple]:
    """Group missing entries by column into power-of-two padded buckets for batched Gram updates.

    pos: [nnz] column slot of each missing entry. Returns, per bucket, (column slots [cb],
    the bucket-local column index of each entry, the padded length L, (entry ids, row-in-column)).
    """
    counts = torch.bincount(pos, minlength=nc)
    order = torch.argsort(pos, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.empty_like(pos)
    within[order] = torch.arange(pos.numel(), device=pos.device) - starts[pos[order]]
    length = torch.where(counts > 0, 2 ** torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), 0)
    out = []
    for L in torch.unique(length[counts > 0]).tolist():
        cols_b = (length == L).nonzero().squeeze(1)
        local = torch.full((nc,), -1, dtype=torch.long, device=pos.device)
        local[cols_b] = torch.arange(cols_b.numel(), device=pos.device)
        ent = (length[pos] == L).nonzero().squeeze(1)
        out.append((cols_b, local[pos[ent]], int(L), (ent, within[ent])))
    return out


def regress(
    w: torch.Tensor,
    missing: torch.Tensor,
    *,
    rank: int | None = None,
    side: torch.Tensor | None = None,
    ridge: float = 1e-3,
    shrink: float = 3.0,
    shrink_mode: str = "spectral",
    lam: float | None = None,
    max_iters: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **_: object,
) -> Completion:
    """Per-column regression on side features and a low-rank basis (the fast default).

    Each column j of W (one hidden unit's output weights) is fitted, on its observed rows
    only, by least squares on p = d + rank regressors: the d side vectors of the same hidden
    unit (its intact ff.net.0.proj rows, which live in the same space as W's columns) and the
    top-`rank` left singular vectors of the current filled matrix; the fit then predicts the
    column's missing rows. Missing entries are few, so each column's normal equations are the
    full Gram matrix minus the missing rows' outer products: the cost is a thin randomized
    SVD plus O(pruned * p^2).

    Args:
        rank: size of the low-rank basis; None -> 32.
        side: [d, out, in] side vectors aligned with W (side[:, :, j] for column j), or None.
        ridge: Tikhonov weight relative to the mean diagonal of each Gram matrix.
        shrink: ridge on the basis coefficients (the basis is orthonormal, so this is
            scale-free); with shrink_mode "spectral" component i gets
            shrink * (median singular value / s_i)^2, so weak directions are damped most
            (a SoftImpute-like prior); "flat" gives every component `shrink`. Tuned on real
            pretrained FFN weights (which are far from low rank); use 0 for a truly low-rank matrix.
        lam: alias of `shrink` (what `AttackConfig.lam` sets).
        max_iters: refits, each with the basis recomputed from the previous completion.
        seed: seeds the randomized basis.
    Confidence: |estimate|.
    """
    if lam is not None:
        shrink = float(lam)
    m, n = w.shape
    x_obs = w.to(dtype)
    x = column_mean_fill(x_obs, missing)
    if side is not None and (side.ndim != 3 or side.shape[1:] != w.shape):
        raise RevivalError(f"side features must have shape [d, {m}, {n}], got {tuple(side.shape)}.")
    feats = side.to(device=w.device, dtype=dtype) if side is not None else torch.zeros(0, m, n, dtype=dtype, device=w.device)
    d = feats.shape[0]
    if rank is None:
        rank = 32
    if shrink_mode not in ("spectral", "flat"):
        raise RevivalError(f"shrink_mode must be 'spectral' or 'flat', got {shrink_mode!r}.")
    k = int(min(rank, m, n))
    p = d + k
    if p == 0:
        raise RevivalError("the regress solver needs side features or rank >= 1.")
    r_idx, c_idx = missing.nonzero(as_tuple=True)
    cols = torch.unique(c_idx)
    nc = cols.numel()
    if nc == 0:
        return Completion(x, 0, x.abs())
    col_pos = torch.full((n,), -1, dtype=torch.long, device=w.device)
    col_pos[cols] = torch.arange(nc, device=w.device)
    fcd = feats[:, :, cols]                                             # [d, m, c]
    xo = x_obs[:, cols].masked_fill(missing[:, cols], 0)               # observed part, 0 at missing
    ones = torch.ones(m, dtype=dtype, device=w.device)
    g_dd = torch.empty(nc, d, d, dtype=torch.float64, device=w.device)
    for i in range(d):
        for j in range(i, d):
            g_dd[:, i, j] = g_dd[:, j, i] = (ones @ (fcd[i] * fcd[j])).double()
    b_d = torch.stack([(ones @ (fcd[i] * xo)).double() for i in range(d)], 1) if d else \
        torch.zeros(nc, 0, dtype=torch.float64, device=w.device)
    f_miss = feats[:, r_idx, c_idx].T                                   # [nnz, d]
    pos = col_pos[c_idx]
    buckets = _column_buckets(pos, nc)
    eye = torch.eye(p, dtype=torch.float64, device=w.device)
    it = 0
    for it in range(1, max_iters + 1):
        if k > 0:
            u, sv = _left_basis(x, k, seed)
        else:
            u, sv = torch.zeros(m, 0, dtype=dtype, device=w.device), torch.zeros(0, dtype=dtype, device=w.device)
        g = torch.empty(nc, p, p, dtype=torch.float64, device=w.device)
        g[:, :d, :d] = g_dd
        if d:
            uf = torch.stack([(u.T @ fcd[i]).T for i in range(d)], 2).double()   # [c, k, d]
            g[:, d:, :d] = uf
            g[:, :d, d:] = uf.transpose(1, 2)
        g[:, d:, d:] = (u.T @ u).double()
        b = torch.cat([b_d, (u.T @ xo).T.double()], 1)
        a = torch.cat([f_miss, u[r_idx]], 1)                            # regressors at missing [nnz, p]
        for cols_b, slot_col, slot_row, entries in buckets:            # minus the missing rows' outer products
            pad = torch.zeros(cols_b.numel(), slot_row, p, dtype=dtype, device=w.device)
            pad[slot_col, entries[1]] = a[entries[0]]
            g[cols_b] -= (pad.transpose(1, 2) @ pad).double()
        scale = g.diagonal(dim1=1, dim2=2).mean(1)
        scale = scale.clamp(min=1e-6 * float(scale.abs().max().clamp(min=1e-30)))  # fully pruned columns
        g = g + ridge * scale[:, None, None] * eye
        if shrink and k:
            lam_i = torch.full((k,), float(shrink), dtype=g.dtype, device=g.device)
            if shrink_mode == "spectral":
                s64 = sv.double()
                lam_i = lam_i * (s64.median() / s64.clamp(min=1e-30)) ** 2
            g[:, d:, d:] += torch.diag(lam_i)
        coef = torch.linalg.solve(g, b)                                 # [c, p]
        est = torch.nan_to_num((a.double() * coef[pos]).sum(1), nan=0.0, posinf=0.0, neginf=0.0)
        x[r_idx, c_idx] = est.to(dtype)
    return Completion(x, it, x.abs())


Solver = Callable[..., Completion]
SOLVERS: dict[str, Solver] = {"regress": regress, "softimpute": softimpute, "svt": svt}
DEFAULT_SOLVER = "regress"


def complete(w: torch.Tensor, missing: torch.Tensor, *, solver: str = DEFAULT_SOLVER,
             **kwargs: object) -> Completion:
    """Run the named solver on `w` with `missing` positions; see each solver's arguments."""
    if solver not in SOLVERS:
        raise RevivalError(f"unknown solver {solver!r}; choose one of {', '.join(sorted(SOLVERS))}.")
    if w.ndim != 2 or missing.shape != w.shape:
        raise RevivalError(f"completion needs a 2-D matrix and a mask of the same shape, got {tuple(w.shape)} and {tuple(missing.shape)}.")
    return SOLVERS[solver](w, missing.bool(), **kwargs)
