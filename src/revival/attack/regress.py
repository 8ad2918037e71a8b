"""The default completion solver `regress`: per-column least squares of each column's observed
entries on the same hidden unit's partner vectors (side information) plus a damped low-rank
basis, validated on held-out positions. See `completion.py`."""
from __future__ import annotations

import torch

from revival.errors import RevivalError
from revival.attack.lowrank import Completion, column_mean_fill, holdout_mask, init_basis, kept_sign_accuracy


def _left_basis(x: torch.Tensor, k: int, seed: int, power: int = 4,
                oversample: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left singular vectors [m, k] and values [k] of x (seeded randomized subspace iteration)."""
    m, n = x.shape
    q = min(k + oversample, m, n)
    v = init_basis(n, q, seed, x.device, x.dtype)
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
