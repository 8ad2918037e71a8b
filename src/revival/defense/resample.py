"""Resample the hidden units where pruning concentrated (this project's defense; the default).

What revives a concept is not the exact pruned entries: an attacker who finds the concept's hidden
units (columns of ff.net.2) and pushes their output columns, at Neuron-Max magnitudes, along the
direction the column's *surviving* entries and side information predict brings the concept back.
Such units are findable from the release alone: ConceptPrune's activation statistics can be rerun
on it (the layers that feed ff.net.2 are intact), and after Gaussian obfuscation their columns
still show (small survivors, noise that does not fit the unit's ff.net.0.proj rows). Measured on
the testbed (benchmarks/defense_audit.py, 10 concepts): against Gaussian obfuscation the
method-aware attacker gains up to +0.25 erased accuracy (dress), columns +0.20, reprune +0.15.

So this defense removes the direction rather than only hiding the positions. Per target matrix
W [out, in] with pruned (exactly zero) positions P:

1. hot units: the columns j with at least `column_share` (default 0.2) of their rows pruned
   (where pruning concentrated);
2. a hot column is replaced whole, its surviving entries too; every other pruned position gets
   Gaussian obfuscation's fill (row statistics, or the layer's). Nothing is left in the hot
   columns to extrapolate a direction from. `retire=True` (the default) retires the hot units of
   a GEGLU block (`retire_units`): their value and gate rows of ff.net.0.proj are redrawn, their
   gate closed (bias -10), so they write nothing for any input, and their output columns are
   drawn as a live unit's would look (`_map_fill`: the side-information map from the new rows,
   a residual with the other units' covariance, the layer's own value distribution). Without
   it (or without a GEGLU projection and bias), the hot columns get zero-mean Gaussian noise at
   the scale of the unit's own surviving weights (`hot="column"`; `hot="row"`: each row's scale,
   larger and measured costlier). Without it the hot units keep their input rows and still fire
   for the concept: an attacker who finds them (their activations are recomputable) and writes
   Neuron-Max magnitudes into their columns brought concepts back (testbed, 10 concepts, share
   0.4: `columns` +0.38 on coat, `method-aware` +0.35). Retired units are dead, and findable as
   such (their activations are ~0), but hold nothing of the concept: measured, no attacker
   gains there. The cost is the units' contribution to everything else, which ConceptPrune had
   already cut to at most 1 - `column_share` of their output entries.
3. `fresh_units=True` (an option) also redraws the hot
   units' ff.net.0.proj rows from the other units' statistics and their output columns from a
   ridge map (side vectors -> output column, fitted on the other units) plus residual noise: the
   units then look like ordinary units to activation statistics and to a structure fit, but
   fire for every prompt. Measured on the testbed (sneaker, hot="row"): the method-aware
   attacker's localisation fell to chance (entry AUC 0.51), but preserved accuracy fell to 0.63
   against 0.89; so it is not the default.

Why not fill with values consistent with the unit's own side information: a unit's output
column is predictable from its intact input rows through a map shared by all units, and that
prediction carries the concept direction. Measured on the testbed (sneaker): filling the hot
units with that prediction let the method-aware attacker revive the concept to 0.93 (+0.90).
Structure-consistent fills and no concept direction exclude each other here; this defense gives
up the first in the hot units.

Every entry outside P, the hot columns and (with `retire`) the hot units' ff.net.0.proj rows and
biases stays bit-identical. The cost (surviving weights of hot units changed, units retired) is
reported per layer; `benchmarks/defense_audit.py` measures erased and preserved
accuracy against the unlearned model.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from ..errors import RevivalError
from ..layers import check_matrices
from ..seeding import item_seed
from .obfuscate import check_scale, obfuscate_matrix

DEFAULT_COLUMN_SHARE = 0.2
DEFAULT_HOT = "column"
DEFAULT_RETIRE = True


@dataclass
class LayerResample:
    name: str
    shape: list[int]
    pruned: int                 # pruned positions filled
    hot_columns: int            # hidden units replaced whole
    survivors_changed: int      # surviving weights of hot units replaced (the cost)
    side: bool                  # hot columns drawn from the side-information map
    retired: int = 0            # hot units retired (input rows redrawn, gate closed)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ResampleResult:
    seed: int
    scale: float
    column_share: float
    stats: str = "row"
    fresh_units: bool = False
    hot: str = DEFAULT_HOT
    retire: bool = DEFAULT_RETIRE
    layers: list[LayerResample] = field(default_factory=list)
    seconds: float = 0.0
    metadata_removed: list[str] = field(default_factory=list)

    @property
    def pruned(self) -> int:
        return sum(l.pruned for l in self.layers)

    def to_dict(self) -> dict:
        return {"method": "resample", "stats": self.stats, "seed": self.seed, "scale": self.scale,
                "column_share": self.column_share, "fresh_units": self.fresh_units, "hot": self.hot,
                "retire": self.retire,
                "layers": [l.to_dict() for l in self.layers], "metadata_removed": list(self.metadata_removed),
                "totals": {"layers": len(self.layers), "filled": self.pruned,
                           "hot_columns": sum(l.hot_columns for l in self.layers),
                           "survivors_changed": sum(l.survivors_changed for l in self.layers),
                           "retired": sum(l.retired for l in self.layers),
                           "seconds": round(self.seconds, 4)}}


def resample_matrix(w: torch.Tensor, proj: torch.Tensor | None, generator: torch.Generator, *,
                    column_share: float = DEFAULT_COLUMN_SHARE, scale: float = 1.0, fresh_units: bool = False,
                    stats: str = "row", hot: str = DEFAULT_HOT, retire: bool | None = None,
                    bias: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, LayerResample, torch.Tensor | None]:
    """The defense on one matrix W [out, in] and its block's input projection `proj` [d*in, out]
    (or None) with its bias [d*in] (or None). Returns (new W, new proj or None when unchanged,
    facts, new bias or None when unchanged); dtypes kept. retire None: DEFAULT_RETIRE unless
    `fresh_units`."""
    if retire is None:
        retire = DEFAULT_RETIRE and not fresh_units
    if w.dim() != 2 or not w.is_floating_point():
        raise RevivalError(f"resampling needs a 2-D floating-point weight, got shape {list(w.shape)}.")
    out_dim, n_in = w.shape
    if proj is not None and (proj.dim() != 2 or proj.shape[1] != out_dim or proj.shape[0] % n_in
                             or proj.shape[0] // n_in not in (1, 2)):
        proj = None
    pruned = w == 0
    n = int(pruned.sum())
    info = LayerResample("", list(w.shape), n, 0, 0, False)
    if n == 0:
        return w, None, info, None
    if hot not in ("row", "column"):
        raise RevivalError(f"the hot-unit noise scale must be 'row' or 'column', got {hot!r}.")
    hot_mode = hot
    hot = pruned.float().mean(0) >= column_share
    if int(hot.sum()) >= n_in - 1:        # (almost) every unit hot: nothing to learn from
        hot = torch.zeros_like(hot)
    # Gaussian row fill of the pruned positions and of every entry of the hot units
    out, _ = obfuscate_matrix(w.masked_fill(hot[None, :], 0), stats, generator, scale)
    if hot_mode == "column" and bool(hot.any()):
        # hot units: zero-mean noise at the scale of the unit's own surviving weights
        x = w.double()
        keep = ~pruned
        cnt = keep.sum(0).double()
        rms = torch.sqrt((x * x * keep).sum(0) / cnt.clamp(min=1))
        rms = torch.where(cnt >= 2, rms, x[keep].abs().mean() if bool(keep.any()) else torch.ones_like(rms))
        k = int(hot.sum())
        vals = (scale * rms[hot][None, :] * torch.randn(out_dim, k, generator=generator, dtype=torch.float64)).to(w.dtype)
        out[:, hot] = torch.where(vals == 0, torch.finfo(w.dtype).tiny, vals)
    info.hot_columns = int(hot.sum())
    info.survivors_changed = int((hot[None, :] & ~pruned).sum())
    new_proj = new_bias = None
    if info.hot_columns and retire and proj is not None and proj.shape[0] == 2 * n_in and bias is not None \
            and tuple(bias.shape) == (2 * n_in,):
        new_proj, new_bias = retire_units(proj, bias, hot, generator)
        info.retired = info.hot_columns
        # a dead unit's output column changes nothing: draw it as a live unit's would look, so it
        # fits the matrix's structure and value distribution
        out[:, hot] = _map_fill(out, new_proj, hot, generator, 1.0)
        info.side = True
    elif info.hot_columns and fresh_units and proj is not None:
        k = info.hot_columns
        d = proj.shape[0] // n_in
        p = proj.double().reshape(d, n_in, out_dim)                      # [d, in, out]
        cold = ~hot
        mu = p[:, cold].mean(1, keepdim=True)                            # [d, 1, out]
        sd = p[:, cold].std(1, keepdim=True)
        fresh = mu + sd * torch.randn(d, k, out_dim, generator=generator, dtype=torch.float64)
        p_new = p.clone()
        p_new[:, hot] = fresh
        new_proj = p_new.reshape(d * n_in, out_dim).to(proj.dtype)
        info.side = True
        out[:, hot] = _map_fill(out, new_proj, hot, generator, scale)
    return out, new_proj, info, new_bias


def _map_fill(w: torch.Tensor, proj: torch.Tensor, hot: torch.Tensor, generator: torch.Generator,
              scale: float) -> torch.Tensor:
    """Output columns [out, k] for the `hot` units from their (new) input rows in `proj`
    [d*in, out]: the ridge map side vectors -> output column fitted on the other units, plus
    `scale` x a residual drawn with the empirical covariance of the map's leave-one-out residuals
    on the other units (R z / sqrt(n), z ~ N(0, I)): the residual then has the other columns'
    low-rank structure too, not only their spread. W's dtype, no exact zero."""
    from ..attack.columns import fit_column_map

    out_dim, n_in = w.shape
    d = proj.shape[0] // n_in
    side = proj.double().reshape(d, n_in, out_dim).permute(0, 2, 1).float()   # [d, out, in]
    full, r = fit_column_map(w.float(), side, hot, loo=True)                   # r: [out, n_cold], out of sample
    centre = full.double()[:, hot]
    r = r - r.mean(1, keepdim=True)
    z = torch.randn(r.shape[1], int(hot.sum()), generator=generator, dtype=torch.float64)
    values = centre + scale * (r @ z) / max(1, r.shape[1] - 1) ** 0.5
    if scale == 1.0:
        values = _match_marginal(values, w.double()[:, ~hot].flatten(), generator)
    values = values.to(w.dtype)
    return torch.where(values == 0, torch.finfo(w.dtype).tiny, values)


def _match_marginal(values: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each column of `values` [out, k] keeps its rank order but takes its values from a fresh
    sample of `pool` (the other units' weights): the entries then follow the layer's own
    distribution (its peak at zero and its tails), which a Gaussian draw does not."""
    out = torch.empty_like(values)
    for j in range(values.shape[1]):
        idx = torch.randint(pool.numel(), (values.shape[0],), generator=generator)
        sample = pool[idx].sort().values
        out[values[:, j].argsort(), j] = sample
    return out


RETIRED_GATE_BIAS = -10.0   # gelu(-10 +- a little) ~ 1e-22: the unit writes nothing, for any input
RETIRED_GATE_SCALE = 1e-3   # the retired gate rows' spread, relative to the other gate rows'


def retire_units(proj: torch.Tensor, bias: torch.Tensor, hot: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Retire the hidden units `hot` of a GEGLU input projection [2*in, dim] (value rows, then
    gate rows, as diffusers' GEGLU chunks them) with its bias [2*in]: their value rows are redrawn
    from the other units' value-row statistics, their gate rows at RETIRED_GATE_SCALE of the
    other gate rows' spread, and their gate bias set to RETIRED_GATE_BIAS, so gelu(gate) is ~0
    for any input and the unit contributes nothing whatever its output column holds. Nothing
    of the unit's own weights is left to revive it from (an attacker sees a dead unit)."""
    n_in = proj.shape[0] // 2
    p = proj.double().clone()
    b = bias.double().clone()
    value, gate = p[:n_in], p[n_in:]
    cold = ~hot
    k = int(hot.sum())
    mu, sd = value[cold].mean(0, keepdim=True), value[cold].std(0, keepdim=True)
    value[hot] = mu + sd * torch.randn(k, p.shape[1], generator=generator, dtype=torch.float64)
    gsd = gate[cold].std(0, keepdim=True)
    gate[hot] = RETIRED_GATE_SCALE * gsd * torch.randn(k, p.shape[1], generator=generator, dtype=torch.float64)
    b[n_in:][hot] = RETIRED_GATE_BIAS
    vb = b[:n_in]
    vb[hot] = vb[cold].mean() + vb[cold].std() * torch.randn(k, generator=generator, dtype=torch.float64)
    return p.to(proj.dtype), b.to(bias.dtype)


def proj_bias_name(name: str) -> str | None:
    """The block's input-projection bias next to an ...ff.net.2.weight name (None for other names)."""
    p = proj_name(name)
    return p[: -len("weight")] + "bias" if p else None


def proj_name(name: str) -> str | None:
    """The block's input projection next to an ...ff.net.2.weight name (None for other names)."""
    return name[: -len("ff.net.2.weight")] + "ff.net.0.proj.weight" if name.endswith("ff.net.2.weight") else None


def resample(tensors: Mapping[str, torch.Tensor], layers: list[str], seed: int = 0, *,
             column_share: float = DEFAULT_COLUMN_SHARE, scale: float = 1.0, fresh_units: bool = False,
             stats: str = "row", hot: str = DEFAULT_HOT, retire: bool | None = None,
             progress: bool = False) -> tuple[dict[str, torch.Tensor], ResampleResult]:
    """The defense over `layers` of a state dict -> (updates, ResampleResult); per-layer seeds
    from (seed, layer name): same seed -> same bytes. `retire`: hot units of a GEGLU block with
    its projection and bias in `tensors` are retired (`retire_units`; None: DEFAULT_RETIRE unless
    `fresh_units`, the other treatment of the hot units)."""
    from ..attack.revive import side_features

    check_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RevivalError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(column_share, bool) or not isinstance(column_share, (int, float)) or not 0 < column_share <= 1:
        raise RevivalError(f"the hot-unit share must be in (0, 1], got {column_share!r}.")
    from .obfuscate import STATS

    if stats not in STATS:
        raise RevivalError(f"stats must be one of {', '.join(STATS)}, got {stats!r}.")
    if retire is None:
        retire = DEFAULT_RETIRE and not fresh_units
    if retire and fresh_units:
        raise RevivalError("retire and fresh units are two treatments of the hot units: choose one.")
    result = ResampleResult(seed, float(scale), float(column_share), stats=stats, fresh_units=bool(fresh_units),
                            hot=hot, retire=bool(retire))
    check_matrices(tensors, layers, "the defense")
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="resample", unit="layer")
    for name in it:
        w = tensors[name]
        pname = proj_name(name)
        proj = tensors.get(pname) if pname else None
        if proj is not None and side_features(tensors, name, tuple(w.shape)) is None:
            proj = None                   # not a usable projection (shape, NaN)
        bname = proj_bias_name(name)
        bias = tensors.get(bname) if bname and proj is not None else None
        g = torch.Generator().manual_seed(item_seed(seed, name))
        out, new_proj, info, new_bias = resample_matrix(
            w.cpu(), None if proj is None else proj.cpu(), g, column_share=column_share, scale=scale,
            fresh_units=fresh_units, stats=stats, hot=hot, retire=retire, bias=None if bias is None else bias.cpu())
        info.name = name
        result.layers.append(info)
        if info.pruned:
            updates[name] = out.to(w.device)
        if new_proj is not None:
            updates[pname] = new_proj.to(proj.device)
        if new_bias is not None:
            updates[bname] = new_bias.to(bias.device)
    result.seconds = time.perf_counter() - start
    return updates, result
