"""Partner matrices: the other linear of the same hidden units, as side information both ways.

A feed-forward block has an input linear W_in [g * hidden, dim] (one row per hidden unit; a
GEGLU projection has g = 2 rows per unit, value row j and gate row hidden + j) and an output
linear W_out [dim, hidden] (one column per hidden unit). In trained networks a unit's output
column W_out[:, j] is aligned, up to a per-unit sign and scale, with its own input rows
W_in[j], W_in[hidden + j]: each is side information for the other.

- Completing W_out: column j is fitted on the unit's input rows (d = g side vectors).
- Completing W_in: the completion runs on W_in^T [dim, g * hidden], whose column j is unit
  j's input row; side vectors: the unit's output column W_out[:, j] and, for GEGLU, the unit's
  other input row (gate for value, value for gate).

When the partner is itself pruned (CAD-Erase prunes both linears), its pruned entries are
unknown: `side_missing` marks them so the solver leaves those rows out of each column's fit,
and the side values there are a first, side-free estimate of the partner (`fill`).

Pairs known by name (`revival.release.pairs`: diffusers UNet, CLIP and BERT-style text encoders):
``ff.net.0.proj`` -> ``ff.net.2``; ``mlp.fc1`` -> ``mlp.fc2``; ``intermediate.dense`` ->
``output.dense`` (not ``attention.output.dense``); and the attention value chain
``to_v`` -> ``to_out.0`` (validated like every other side information).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from revival.release.masks import layer_zero_test
from revival.release.pairs import present_partner
from revival.runtime.seeding import item_seed
from revival.attack.completion import complete
from revival.attack.config import SOLVERS_TAKE_SIDE
from revival.attack.magnitudes import get_magnitude
from revival.attack.matrix import revive_matrix, side_features
from revival.attack.rows import RowEstimate, estimate_unit_rows
from revival.attack.signs import top_k_signs


@dataclass(frozen=True)
class Partner:
    """The partner of a layer: its name, and whether the layer is the pair's input linear."""

    name: str          # the partner's key
    layer_is_input: bool  # True: the layer is W_in (rows = units), the partner W_out (columns = units)


def find_partner(name: str, tensors: Mapping[str, torch.Tensor]) -> Partner | None:
    """The partner of `name` present in `tensors` (`revival.release.pairs`), or None."""
    p = present_partner(name, tensors)
    return Partner(*p) if p is not None else None


def units_of(w_in_shape: tuple[int, int], w_out_shape: tuple[int, int]) -> int | None:
    """g (input rows per unit: 1 plain, 2 GEGLU) when the shapes pair up, else None."""
    rows_in, dim_in = w_in_shape
    dim_out, hidden = w_out_shape
    if hidden == 0 or rows_in % hidden or rows_in // hidden not in (1, 2):
        return None
    if dim_in != dim_out:  # W_in reads the block's input, W_out writes its output: the same width
        return None
    return rows_in // hidden


@dataclass
class SideInfo:
    """Side information for one matrix in its completion orientation.

    transpose: complete W.T (the layer is an input linear: its units are rows).
    side: [d, m, n] side vectors aligned with the oriented matrix [m, n] (the partner's dtype;
        a strided view for an output linear).
    side_missing: [m, n] bool or None: where a side entry is itself unknown (partner pruned).
    side_sets: candidate subsets for validation ({name: indices}).
    partner: the partner's key. units: g.
    """

    transpose: bool
    side: torch.Tensor
    side_missing: torch.Tensor | None
    side_sets: dict[str, list[int]]
    partner: str
    units: int


def side_info(w: torch.Tensor, partner_w: torch.Tensor, partner: Partner,
              partner_pruned: torch.Tensor | None = None,
              partner_filled: torch.Tensor | None = None,
              own_pruned: torch.Tensor | None = None) -> SideInfo | None:
    """Side vectors for `w` from its partner (see the module doc), or None when shapes do not pair.

    partner_pruned: [partner shape] bool, the partner's pruned entries (None: intact);
    partner_filled: the partner with an estimate at those entries (None: their zeros).
    own_pruned: `w`'s own pruned entries (GEGLU input linears: the other row of the same unit
        is side information too, unknown where it is pruned).
    """
    if w.ndim != 2 or partner_w.ndim != 2:
        return None
    # the partner's own dtype and, for an output linear, a strided view: no copy of a large matrix
    pw = partner_filled.to(partner_w.dtype) if partner_filled is not None else partner_w
    if partner.layer_is_input:
        g = units_of(tuple(w.shape), tuple(partner_w.shape))
        if g is None:
            return None
        hidden = partner_w.shape[1]
        feats = [pw.repeat(1, g)]                                  # [dim, g*hidden]: W_out[:, j]
        miss = [partner_pruned.repeat(1, g)] if partner_pruned is not None else []
        sets = {"partner": [0]}
        if g == 2:                                                 # the unit's other input row
            wt = w.T
            feats.append(wt.roll(hidden, dims=1))
            if own_pruned is not None:
                miss.append(own_pruned.T.roll(hidden, dims=1))
            sets = {"partner": [0], "other_row": [1], "both": [0, 1]}
        side = torch.stack(feats)
    else:
        g = units_of(tuple(partner_w.shape), tuple(w.shape))
        if g is None:
            return None
        dim, hidden = w.shape
        side = pw.reshape(g, hidden, dim).permute(0, 2, 1)         # [g, dim, hidden]
        miss = []
        if partner_pruned is not None:
            miss = [partner_pruned.reshape(g, hidden, dim).permute(0, 2, 1).any(0)]
        sets = {"side": list(range(g))}  # the name regress has always reported
    side_missing = None
    if miss:
        side_missing = miss[0].clone()
        for extra in miss[1:]:
            side_missing |= extra
        if not bool(side_missing.any()):
            side_missing = None
    if not all(bool(torch.isfinite(f).all()) for f in side.unbind(0)):
        return None
    return SideInfo(partner.layer_is_input, side, side_missing, sets, partner.name, g)


def revive_layer(tensors: Mapping[str, torch.Tensor], name: str, config, device: torch.device,
                 side_override: dict[str, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, int, int, int, dict]:
    """Revive one matrix of `tensors` with its partner as side information (both directions,
    pruned partner entries treated as missing) and an honest outcome for whole missing rows.

    Returns (new matrix in w's dtype, pruned, kept, iterations, info); info holds the solver's
    facts ("side", "side_set", "validation") plus "partner", "partner_pruned" and "whole_rows"
    (a `rows.RowEstimate` dict). `side_override` ({name: projection}) keeps the older lookup
    (`revive.side_features`) for callers that pass their own side matrices.
    """

    w = tensors[name]
    takes_side = config.solver in SOLVERS_TAKE_SIDE and config.side
    if side_override is not None and name in side_override:
        feats = side_features(tensors, name, tuple(w.shape), side_override) if takes_side else None
        return revive_matrix(w, config, name=name, features=feats, device=device)
    missing = w == 0
    n_pruned = int(missing.sum())
    if n_pruned == 0:
        return w, 0, 0, 0, {}
    seed = item_seed(config.seed, name)
    partner = find_partner(name, tensors)
    info_extra: dict = {"partner": partner.name if partner else None, "partner_pruned": False}
    si = None
    if partner is not None:
        pw = tensors[partner.name]
        if pw.ndim == 2 and pw.is_floating_point() and bool(torch.isfinite(pw).all()):
            p_pruned = None
            p_filled = None
            if takes_side and layer_zero_test(partner.name, pw) is not None:
                p_pruned = (pw == 0).to(device)
                info_extra["partner_pruned"] = True
                first = complete(pw.to(device), p_pruned, solver="regress", seed=item_seed(config.seed, name, "partner"), validate=False)
                p_filled = first.matrix
            si = side_info(w.to(device), pw.to(device), partner, p_pruned, p_filled, missing.to(device))
            del p_filled
    whole = missing.all(1)
    n_whole = int(whole.sum())
    wd = w.to(device)
    md = missing.to(device)
    transpose = si.transpose if si is not None else False
    x, mx = (wd.T, md.T) if transpose else (wd, md)
    kwargs: dict = {"seed": seed}
    for key in ("rank", "lam", "max_iters", "tol"):
        if getattr(config, key) is not None:
            kwargs[key] = getattr(config, key)
    if si is not None and takes_side:
        kwargs.update(side=si.side, side_missing=si.side_missing, side_sets=si.side_sets)
    comp = complete(x, mx, solver=config.solver, **kwargs)
    est = comp.matrix.T if transpose else comp.matrix
    conf = None if comp.confidence is None else (comp.confidence.T if transpose else comp.confidence)
    # Whole missing rows of an output linear whose columns were fitted on the partner's entries
    # are predicted like any other entry (the partner holds those rows' features); elsewhere a
    # row with no surviving entry has nothing to be fitted on in its own matrix.
    rows_by_columns = bool(comp.info.get("side")) and not transpose
    if rows_by_columns:
        whole = torch.zeros_like(whole)
        n_whole = 0
    entry_missing = md & ~whole.to(device)[:, None]
    out = w.clone()
    n_kept = 0
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if bool(entry_missing.any()):
        kept, signs = top_k_signs(est, entry_missing, config.keep, conf)
        rows, cols = kept.nonzero(as_tuple=True)
        values = get_magnitude(config.magnitude)(
            wd, ~md, rows, cols, signs[rows, cols].double(), est[rows, cols].double(), gen)
        out[rows.to(out.device), cols.to(out.device)] = values.to(device=out.device, dtype=w.dtype)
        n_kept = int(rows.numel())
    row_info = None
    if n_whole:
        row_est = None
        if partner is not None and partner.layer_is_input is True and si is not None:
            row_est, row_info = estimate_unit_rows(wd, tensors[partner.name].to(device), whole.to(device),
                                                   keep=config.keep, seed=seed)
        else:
            row_info = RowEstimate(rows=n_whole, note=(
                "not recoverable from this matrix (no entry of these rows survives), and no partner "
                "matrix holds these rows' units"))
        if row_est is not None:
            flat = row_est.abs().flatten()
            n_top = max(1, int(round(config.keep * flat.numel())))
            thresh = flat.sort(descending=True).values[n_top - 1]
            keep_mask = row_est.abs() >= thresh
            vals = torch.where(keep_mask, row_est, torch.zeros_like(row_est))
            out[whole.to(out.device)] = vals.to(device=out.device, dtype=w.dtype)
            n_kept += int(keep_mask.sum())
    info = dict(comp.info)
    info.update(info_extra)
    info["whole_rows"] = row_info.to_dict() if row_info is not None else None
    return out, n_pruned, n_kept, comp.iterations, info
