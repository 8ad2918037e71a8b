"""The revival attack's settings (one frozen dataclass, validated on construction)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from revival.errors import RevivalError
from revival.attack.completion import SOLVERS
from revival.attack.magnitudes import MAGNITUDES

# solvers that take side information (the partner matrix's vectors of the same hidden units)
SOLVERS_TAKE_SIDE = frozenset({"regress"})


@dataclass(frozen=True)
class AttackConfig:
    """Settings of the revival attack.

    solver: completion solver name (see `completion.SOLVERS`); "svt" is the paper's recipe.
    rank: low-rank basis size / rank cap (ignored by "svt"); None = the solver's default
        (regress: 32; softimpute: 96).
    lam: regularization; None = the solver's default. softimpute: the soft threshold (default
        the (rank+1)-th singular value); regress: the ridge on the low-rank basis coefficients
        (default 3, spectral); ignored by svt.
    keep: fraction of pruned positions whose sign is retained, in (0, 1] (paper: 0.6).
    magnitude: magnitude rule name (see `magnitudes.MAGNITUDES`); paper: "neuron-max".
    seed: seeds every random choice.
    device: "cpu", "cuda", ...; None = CUDA when available, else CPU.
    max_iters, tol: solver iteration cap and tolerance; None = the solver's default.
    side: offer side information (the intact ff.net.0.proj rows of the same hidden units) to
        solvers that take it, when present; regress then keeps it only where it validates.
    """

    solver: str = "regress"
    rank: int | None = None
    lam: float | None = None
    keep: float = 0.6
    magnitude: str = "neuron-max"
    seed: int = 0
    device: str | None = None
    max_iters: int | None = None
    tol: float | None = None
    side: bool = True

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise RevivalError(f"solver must be one of {', '.join(sorted(SOLVERS))}, got {self.solver!r}.")
        if self.magnitude not in MAGNITUDES:
            raise RevivalError(f"magnitude must be one of {', '.join(MAGNITUDES)}, got {self.magnitude!r}.")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0):
            raise RevivalError(f"rank must be a non-negative integer or None, got {self.rank!r}.")
        if self.lam is not None and not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise RevivalError(f"lam must be a non-negative number or None, got {self.lam!r}.")
        if not isinstance(self.keep, (int, float)) or isinstance(self.keep, bool) or not 0.0 < self.keep <= 1.0:
            raise RevivalError(f"keep must be a fraction in (0, 1], got {self.keep!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise RevivalError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.side, bool):
            raise RevivalError(f"side must be True or False, got {self.side!r}.")
        if self.max_iters is not None and (isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 1):
            raise RevivalError(f"max_iters must be a positive integer or None, got {self.max_iters!r}.")
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise RevivalError(f"tol must be a positive number or None, got {self.tol!r}.")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError):
                raise RevivalError(f"device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}.") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise RevivalError("device 'cuda' was asked for but CUDA is not available.")
