"""The paper's completion recipe (`svt`: singular value thresholding with a full SVD each
iteration) and its fast relative `softimpute` (a rank-capped subspace by block power iteration).
See `completion.py` for how the solvers are chosen."""
from __future__ import annotations

import torch

from revival.attack.lowrank import Completion, column_mean_fill, init_basis


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
def _top_singular(x: torch.Tensor, k: int, seed: int, power: int = 4) -> torch.Tensor:
    """Approximate top-(k) singular values of x (randomized, seeded)."""
    v = init_basis(x.shape[1], k, seed, x.device, x.dtype)
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
    v = init_basis(n, k, seed, x.device, dtype)
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
