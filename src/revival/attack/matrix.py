"""One matrix revived from its exact zeros: completion -> Top-K sign retention -> magnitudes.

`side_features` looks up the block's input projection as side information for an output
linear; `revive_matrix` revives one matrix. `partners.revive_layer` (both directions, pruned
partners, whole rows) builds on these and is what every caller uses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from revival.runtime.seeding import item_seed
from revival.attack.completion import complete
from revival.attack.magnitudes import get_magnitude
from revival.attack.signs import top_k_signs

if TYPE_CHECKING:
    from revival.attack.config import AttackConfig


def side_features(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, int],
                  side: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
    """Side vectors [d, out, in] for the matrix `name` of `shape` [out, in], or None.

    Hidden unit j (column j of W) is read in by row j of the block's intact input projection
    `ff.net.0.proj.weight` [in or 2*in, out], whose rows live in the same space as W's
    columns. A GEGLU projection [2*in, out] gives each unit two vectors (value row j and gate
    row in + j), a plain one [in, out] gives one. Taken from `side[name]` when given (a
    projection matrix of either shape), else looked up in `tensors` next to an
    `...ff.net.2.weight` name. None when absent, non-finite or of a non-matching shape.
    The result is a strided view of the projection (its dtype; no copy).
    """
    out_dim, n_in = shape
    p = None
    if side is not None and name in side:
        p = side[name]
    elif name.endswith("ff.net.2.weight"):
        p = tensors.get(name[: -len("ff.net.2.weight")] + "ff.net.0.proj.weight")
    if p is None or p.ndim != 2 or p.shape[1] != out_dim or not p.is_floating_point():
        return None
    if p.shape[0] not in (n_in, 2 * n_in) or not bool(torch.isfinite(p).all()):
        return None
    # strided views, no copy: [d, in, out] -> [d, out, in]
    return p.reshape(p.shape[0] // n_in, n_in, out_dim).permute(0, 2, 1)


def revive_matrix(w: torch.Tensor, config: AttackConfig, *, name: str = "",
                  features: torch.Tensor | None = None, device: torch.device | None = None
                  ) -> tuple[torch.Tensor, int, int, int, dict]:
    """Revive one matrix: returns (new matrix in w's dtype, pruned, kept, iterations, solver info)."""
    device = device or torch.device("cpu")
    missing = w == 0
    n_pruned = int(missing.sum())
    if n_pruned == 0:
        return w, 0, 0, 0, {}
    seed = item_seed(config.seed, name)
    wd = w.to(device)
    md = missing.to(device)
    kwargs: dict = {"seed": seed}
    if config.rank is not None:
        kwargs["rank"] = config.rank
    if config.lam is not None:
        kwargs["lam"] = config.lam
    if config.max_iters is not None:
        kwargs["max_iters"] = config.max_iters
    if config.tol is not None:
        kwargs["tol"] = config.tol
    if features is not None:
        kwargs["side"] = features.to(device)
    comp = complete(wd, md, solver=config.solver, **kwargs)
    kept, signs = top_k_signs(comp.matrix, md, config.keep, comp.confidence)
    rows, cols = kept.nonzero(as_tuple=True)          # row-major order
    gen = torch.Generator(device="cpu").manual_seed(seed)
    values = get_magnitude(config.magnitude)(
        wd, ~md, rows, cols, signs[rows, cols].double(), comp.matrix[rows, cols].double(), gen)
    out = w.clone()  # on w's device: every tensor meeting it is moved there
    out[rows.to(out.device), cols.to(out.device)] = values.to(device=out.device, dtype=w.dtype)
    return out, n_pruned, int(rows.numel()), comp.iterations, comp.info
