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
  (500) iterations or, from iteration 2, ||X_k - X_{k-2}|| / ||X_{k-2}|| < `tol` (1e-5), the
  reference loop's own stopping rule; no rank cap.
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

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import RevivalError


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
        tol: the stopping rule exactly as the reference loop behaves: with X_0 the column-mean
            fill and X_k the k-th rebuilt matrix (observed entries restored), stop after
            iteration k >= 2 when ||X_k - X_{k-2}|| / ||X_{k-2}|| < tol (the loop compares with
            the previous iteration's INPUT); X_k is the result. 1e-5 in the reference.
    Runs in float64 on w's device. Slow: one full SVD per iteration.
    """
    x_obs = w.to(torch.float64)
    x = column_mean_fill(x_obs, missing)
    prev = None  # X_{k-2}: the previous iteration's input
    it = 0
    for it in range(1, max_iters + 1):
        x_in = x
        u, s, vh = torch.linalg.svd(x_in, full_matrices=False)
        s = (s - s[-1]).clamp(min=0)
        x = torch.where(missing, (u * s) @ vh, x_obs)
        if prev is not None:
            change = torch.linalg.norm(x - prev) / torch.linalg.norm(prev).clamp(min=1e-300)
            if change < tol:
                break
        prev = x_in
    return Completion(x, it, None)


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
    return Completion(x, it, None)


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
    """Group entries (sorted by column slot `pos`) into power-of-two padded buckets.

    Returns, per bucket: (column slots [cb], padded length L, (bucket-local slot, entry id) of
    each entry, the entry's index within its column). Lets the Gram updates run as a few bmm.
    """
    counts = torch.bincount(pos, minlength=nc)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(pos.numel(), device=pos.device) - starts[pos]
    length = torch.where(counts > 0, 2 ** torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), 0)
    out = []
    for L in torch.unique(length[counts > 0]).tolist():
        slots = (length == L).nonzero().squeeze(1)
        local = torch.full((nc,), -1, dtype=torch.long, device=pos.device)
        local[slots] = torch.arange(slots.numel(), device=pos.device)
        ent = (length[pos] == L).nonzero().squeeze(1)
        out.append((slots, int(L), (local[pos[ent]], ent), within[ent]))
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


def _pick(side: torch.Tensor, ix: list[int]) -> torch.Tensor:
    """side[ix], without a copy when ix is every side vector in order."""
    return side if list(ix) == list(range(side.shape[0])) else side[ix]


def regress(
    w: torch.Tensor,
    missing: torch.Tensor,
    *,
    rank: int | None = None,
    side: torch.Tensor | None = None,
    side_missing: torch.Tensor | None = None,
    side_sets: dict[str, list[int]] | None = None,
    ridge: float = 1e-3,
    shrink: float = 3.0,
    shrink_mode: str = "spectral",
    lam: float | None = None,
    max_iters: int = 1,
    seed: int = 0,
    validate: bool = True,
    max_val_cols: int = 1024,
    chunk: int = 512,
    dtype: torch.dtype = torch.float32,
    **_: object,
) -> Completion:
    """Per-column regression on side features and a damped low-rank basis (the fast default).

    Each column j of W (one hidden unit's output weights) is fitted, on its observed rows
    only, by least squares on p = d + rank regressors: the d side vectors of the same hidden
    unit (its intact ff.net.0.proj rows, which live in the same space as W's columns) and the
    top-`rank` left singular vectors of the column-mean-filled matrix; the fit then predicts
    the column's missing rows. Missing entries are few, so each column's normal equations are
    the full Gram matrix minus the missing rows' outer products: the cost is a thin randomized
    SVD plus O(pruned * p^2), done in chunks of `chunk` columns to bound memory.

    Args:
        rank: size of the low-rank basis; None -> 32.
        side: [d, out, in] side vectors aligned with W (side[:, :, j] for column j; any dtype,
            may be a strided view), or None.
        side_missing: [out, in] bool, True where some side vector's entry is itself unknown
            (the partner matrix was pruned there too; `side` then holds an estimate). Such rows
            are left out of each column's fit, as if missing, but still predicted from the
            estimate. None: every side entry is known.
        side_sets: candidate subsets of the side vectors, {name: [feature indices]}; validation
            tries each (and none) and keeps the best. None: one set, all of them ("side").
        ridge: Tikhonov weight relative to the mean diagonal of each Gram matrix.
        shrink: ridge on the basis coefficients (the basis is orthonormal, so this is
            scale-free); with shrink_mode "spectral" component i gets
            shrink * (median singular value / s_i)^2, so weak directions are damped most
            (a SoftImpute-like prior); "flat" gives every component `shrink`. Tuned on real
            pretrained FFN weights (which are far from low rank); use 0 for a truly low-rank matrix.
        lam: alias of `shrink` (what `AttackConfig.lam` sets).
        max_iters: refits, each with the basis recomputed from the previous completion.
        seed: seeds the randomized basis and the validation hold-out.
        validate: with side features, first hold out observed entries that look like pruned
            ones (`holdout_mask`), fit with and without the side features, and keep them only
            if they predict the held-out signs strictly better (side information is strong
            on real transformer FFNs and useless on some small models). info reports the
            choice and both validation accuracies. On a matrix with more than `max_val_cols`
            pruned columns the validation runs on a seeded sample of that many of them.
    Confidence: |estimate|.
    info: "side" (bool: side vectors used), "side_set" (the candidate chosen), "validation"
        (held-out sign accuracy of every candidate and of "no_side").
    """
    if lam is not None:
        shrink = float(lam)
    if shrink_mode not in ("spectral", "flat"):
        raise RevivalError(f"shrink_mode must be 'spectral' or 'flat', got {shrink_mode!r}.")
    m, n = w.shape
    if side is not None and (side.ndim != 3 or tuple(side.shape[1:]) != (m, n)):
        raise RevivalError(f"side features must have shape [d, {m}, {n}], got {tuple(side.shape)}.")
    if side_missing is not None and tuple(side_missing.shape) != (m, n):
        raise RevivalError(f"side_missing must have shape [{m}, {n}], got {tuple(side_missing.shape)}.")
    if side is None:
        side_missing, side_sets = None, None
    elif side_sets is None:
        side_sets = {"side": list(range(side.shape[0]))}
    elif not side_sets or any(not ix or max(ix) >= side.shape[0] or min(ix) < 0 for ix in side_sets.values()):
        raise RevivalError(f"side_sets must name non-empty subsets of the {side.shape[0]} side vectors.")
    dev = w.device
    info: dict = {"side": side is not None}
    if side is not None and len(side_sets) == 1 and not (validate and (rank is None or rank > 0)):
        info["side_set"] = next(iter(side_sets))
        side = _pick(side, side_sets[info["side_set"]])
    if side is not None and validate and (rank is None or rank > 0):
        kw = dict(rank=rank, ridge=ridge, shrink=shrink, shrink_mode=shrink_mode, max_iters=max_iters,
                  validate=False, chunk=chunk, dtype=dtype)
        vw, vm, vs, vsm = w, missing, side, side_missing
        cand = missing.any(0).nonzero().squeeze(1)
        if cand.numel() > max_val_cols:                        # big matrix: validate on a column sample
            g = torch.Generator(device="cpu").manual_seed(seed + 104729)
            pick = cand[torch.randperm(cand.numel(), generator=g)[:max_val_cols].to(cand.device)].sort().values
            vw, vm, vs = w[:, pick], missing[:, pick], side[:, :, pick]
            vsm = None if side_missing is None else side_missing[:, pick]
        hits = {name: 0.0 for name in side_sets}
        hits["no_side"] = 0.0
        total, rep, n_all = 0, 0, 0
        while rep < 4 and (rep == 0 or total < 2000):       # small matrices: pool a few hold-outs
            held = holdout_mask(vw, vm, seed + rep) & ~vm
            rep += 1
            n_held = int(held.sum())
            if n_held == 0:
                break
            n_all += n_held
            both = vm | held
            n_top = max(1, int(round(0.6 * n_held)))
            for name, ix in side_sets.items():
                est = regress(vw, both, side=_pick(vs, ix), side_missing=vsm, seed=seed, **kw).matrix
                hits[name] += n_top * kept_sign_accuracy(vw, est, held)
            hits["no_side"] += n_top * kept_sign_accuracy(vw, regress(vw, both, side=None, seed=seed, **kw).matrix, held)
            total += n_top
        if total:
            acc = {key: v / total for key, v in hits.items()}
            best = max(side_sets, key=lambda name: (acc[name], -len(side_sets[name])))
            info = {"side": acc[best] > acc["no_side"],
                    "validation": {**{name: round(acc[name], 4) for name in side_sets},
                                   "no_side": round(acc["no_side"], 4), "held_out": n_all, "rounds": rep}}
            if info["side"]:
                info["side_set"] = best
                side = _pick(side, side_sets[best])
            else:
                side, side_missing = None, None
        elif len(side_sets) == 1:
            info["side_set"] = next(iter(side_sets))
        else:                                              # nothing to validate on: all side vectors
            info["side_set"] = "all"
    x = column_mean_fill(w, missing, dtype=dtype)
    feats = side if side is not None else torch.zeros(0, m, n, dtype=dtype, device=dev)
    d = feats.shape[0]
    k = int(min(32 if rank is None else rank, m, n))
    p = d + k
    if p == 0:
        raise RevivalError("the regress solver needs side features or rank >= 1.")
    # Left out of each column's fit: its missing rows and the rows where a side entry is unknown;
    # predicted: its missing rows. Only columns with a missing entry are solved.
    excl = missing if side_missing is None else missing | (side_missing.to(dev).bool() & missing.any(0)[None])
    r_idx, c_idx = excl.nonzero(as_tuple=True)             # row-major
    if not bool(missing.any()):
        return Completion(x, 0, None, info)
    order = torch.argsort(c_idx, stable=True)              # entries grouped by column
    r_s, c_s = r_idx[order], c_idx[order]
    predict = missing[r_s, c_s]
    cols = torch.unique(c_s)
    bounds = torch.searchsorted(c_s, cols)                  # first entry of each column
    ones = torch.ones(m, dtype=dtype, device=dev)
    eye = torch.eye(p, dtype=torch.float64, device=dev)
    est_s = torch.empty(r_s.numel(), dtype=dtype, device=dev)
    it = 0
    for it in range(1, max_iters + 1):
        if k > 0:
            u, sv = _left_basis(x, k, seed)
        else:
            u, sv = torch.zeros(m, 0, dtype=dtype, device=dev), torch.zeros(0, dtype=dtype, device=dev)
        lam_u = torch.zeros(k, dtype=torch.float64, device=dev)
        if shrink and k:
            lam_u += float(shrink)
            if shrink_mode == "spectral":
                s64 = sv.double()
                lam_u *= (s64.median() / s64.clamp(min=1e-30)) ** 2
        uu = (u.T @ u).double()
        x_new = x.clone() if max_iters > it else x
        for c0 in range(0, cols.numel(), chunk):
            cb = cols[c0:c0 + chunk]
            nc = cb.numel()
            e0 = int(bounds[c0])
            e1 = int(bounds[c0 + chunk]) if c0 + chunk < cols.numel() else r_s.numel()
            rr, cc = r_s[e0:e1], c_s[e0:e1]
            pos = torch.searchsorted(cb, cc)                      # column slot of each entry
            fcd = feats[:, :, cb].to(dtype)                      # [d, m, nc]
            xo = w[:, cb].to(dtype)
            xo[rr, pos] = 0                                       # observed part only
            g = torch.empty(nc, p, p, dtype=torch.float64, device=dev)
            for i in range(d):
                for j in range(i, d):
                    g[:, i, j] = g[:, j, i] = (ones @ (fcd[i] * fcd[j])).double()
            if d:
                uf = torch.stack([(u.T @ fcd[i]).T for i in range(d)], 2).double()   # [nc, k, d]
                g[:, d:, :d] = uf
                g[:, :d, d:] = uf.transpose(1, 2)
            g[:, d:, d:] = uu
            b = torch.cat([torch.stack([ones @ (fcd[i] * xo) for i in range(d)], 1).double() if d
                           else torch.zeros(nc, 0, dtype=torch.float64, device=dev),
                           (u.T @ xo).T.double()], 1)
            a = torch.cat([feats[:, rr, cb[pos]].T.to(dtype), u[rr]], 1)   # regressors at missing [e, p]
            for slots, length, ent, within in _column_buckets(pos, nc):     # minus the missing rows
                pad = torch.zeros(slots.numel(), length, p, dtype=dtype, device=dev)
                pad[ent[0], within] = a[ent[1]]
                g[slots] -= (pad.transpose(1, 2) @ pad).double()
            scale = g.diagonal(dim1=1, dim2=2).mean(1)
            scale = scale.clamp(min=1e-6 * float(scale.abs().max().clamp(min=1e-30)))  # fully pruned columns
            g += ridge * scale[:, None, None] * eye
            g[:, d:, d:] += torch.diag(lam_u)
            coef = torch.linalg.solve(g, b)                                 # [nc, p]
            est = (a.double() * coef[pos]).sum(1)
            est_s[e0:e1] = torch.nan_to_num(est, nan=0.0, posinf=0.0, neginf=0.0).to(dtype)
        x_new[r_s[predict], c_s[predict]] = est_s[predict]
        x = x_new
    return Completion(x, it, None, info)


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
