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

from typing import Callable

import torch

from revival.errors import RevivalError
from revival.attack.lowrank import Completion, column_mean_fill, holdout_mask, kept_sign_accuracy  # noqa: F401 (public names)
from revival.attack.regress import regress
from revival.attack.svt import softimpute, svt


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
