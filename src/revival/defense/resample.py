"""Resample the hidden units where pruning concentrated (this project's defense; the default).

What revives a concept is not the exact pruned entries: an attacker who finds the concept's hidden
units (columns of ff.net.2) and pushes their output columns, at Neuron-Max magnitudes, along the
direction the column's surviving entries and side information predict, brings it back; such units
are findable from the release alone (docs/defense.md says why this is the default, and
`benchmarks/defense_audit.py` measures each defense against every attacker). So this defense
removes the direction rather than only hiding the positions. Per target matrix W [out, in] with
pruned (exactly zero) positions P:

1. hot units: the columns j with at least `column_share` (default 0.2) of their rows pruned;
2. a hot column is replaced whole, its surviving entries too; every other pruned position gets
   Gaussian obfuscation's fill (row statistics, or the layer's). `retire=True` (the default)
   retires the hot units of a GEGLU block (`retire_units`): their value and gate rows of
   ff.net.0.proj are redrawn, their gate closed (a gate bias drawn far below zero), so they
   write nothing for any input, and their output columns are drawn as a live unit's would look
   (`map_fill`: the side-information map from the new rows, a residual with the other units'
   covariance, the layer's own value distribution). Unretired (`retire=False`, or no GEGLU
   projection and bias), the hot units keep firing for the concept; on request their columns get
   zero-mean Gaussian noise at the scale of the unit's own surviving weights (`hot="column"`;
   `hot="row"`: each row's scale).
3. `fresh_units=True` (an option) also redraws the hot units' ff.net.0.proj rows from the other
   units' statistics and their output columns from a ridge map plus residual noise, so that they
   look like ordinary units to activation statistics; they then fire for every prompt, which
   costs preservation, so it is not the default.

The hot units are not filled with values consistent with their own side information: a unit's
output column is predictable from its intact input rows through a map shared by all units, and
that prediction carries the concept direction back. This defense gives up structure-consistent
fills in the hot units instead.

Hidden units are units on every layer type: columns of an output linear (ff.net.2, [out,
hidden]), rows of an input linear (ff.net.0.proj, [g * hidden, in], value row j and gate row
hidden + j of a GEGLU unit j); a layer resample cannot tell the units of is refused in one
sentence (`unit_axis`). Where a unit cannot be retired (no GEGLU gate with its bias: a BERT-style
feed-forward block), the default (`hot=None`) leaves the hot units' surviving weights alone and
fills only the pruned positions, as Gaussian obfuscation does (replacing a whole unit by noise
there makes the filled positions easier to find); `hot="column"` / `"row"` still replace them.

No exact constant: retired gate biases are drawn per unit (the layer's bias distribution, its
low half, shifted well below zero with a continuous margin), every fill is a continuous draw, and
the dead units' output columns follow a smooth density fitted to the layer (no value copied).

Every entry outside P, the hot columns and (with `retire`) the hot units' ff.net.0.proj rows and
biases stays bit-identical. The cost (surviving weights of hot units changed, units retired) is
reported per layer.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from revival.errors import RevivalError
from revival.release.layers import check_matrices
from revival.release.pairs import partner_name
from revival.defense.base import DEFENSE_METHODS, check_scale, check_seed, check_stats, layer_generator, obfuscate_matrix, run_secret
from revival.defense.retire import map_fill, retire_units

DEFAULT_COLUMN_SHARE = 0.2
DEFAULT_HOT = None          # hot units that cannot be retired: kept (Gaussian fill of their pruned entries)
DEFAULT_RETIRE = True
HOT_MODES = ("row", "column")

def unit_axis(name: str) -> tuple[str, str] | None:
    """("columns", the block's input linear) for an output linear, ("rows", the block's output
    linear) for an input linear, None for a layer whose hidden units resample cannot tell."""
    p = partner_name(name)
    if p is None:
        return None
    other, is_input = p
    return ("rows" if is_input else "columns"), other


def check_units(layers) -> None:
    """RevivalError (one sentence) for the first layer whose hidden units resample cannot tell."""
    for name in layers:
        if unit_axis(name) is None:
            raise RevivalError(f"resample treats hidden units as units and cannot tell them in layer {name!r} (it "
                               "knows the input and output linears of feed-forward and attention blocks: "
                               "ff.net.0.proj/ff.net.2, mlp.fc1/fc2, intermediate/output.dense, to_v/to_out.0); "
                               "defend it with the gaussian method or choose other layers.")


@dataclass
class LayerResample:
    name: str
    shape: list[int]
    pruned: int                 # pruned positions filled
    hot_columns: int            # hidden units replaced whole (columns or rows, by the layer's type)
    survivors_changed: int      # surviving weights of the target matrix replaced (the cost)
    side: bool                  # hot units' output columns drawn from the side-information map
    retired: int = 0            # hot units retired (input rows redrawn, gate closed)
    units: str = "columns"      # how the layer's hidden units lie: columns (output linear) or rows (input linear)
    hot_kept: int = 0           # hot units that could not be retired and were kept (Gaussian fill only)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ResampleResult:
    seed: int | None
    scale: float
    column_share: float
    stats: str = "row"
    fresh_units: bool = False
    hot: str | None = DEFAULT_HOT
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
                           "hot_kept": sum(l.hot_kept for l in self.layers),
                           "survivors_changed": sum(l.survivors_changed for l in self.layers),
                           "retired": sum(l.retired for l in self.layers),
                           "seconds": round(self.seconds, 4)}}


def _hot_units(pruned: torch.Tensor, units: str, g: int, column_share: float) -> torch.Tensor:
    """Bool [hidden]: the units with at least `column_share` of their entries pruned (none when
    (almost) every unit is: nothing to learn from)."""
    if units == "columns":
        share = pruned.float().mean(0)
    else:
        share = pruned.float().mean(1).view(g, -1).mean(0)
    hot = share >= column_share
    if int(hot.sum()) >= hot.numel() - 1:
        hot = torch.zeros_like(hot)
    return hot


def _entries(hot: torch.Tensor, shape, units: str, g: int) -> torch.Tensor:
    """Bool [shape]: every entry of the `hot` units."""
    if units == "columns":
        return hot[None, :].expand(shape)
    return hot.repeat(g)[:, None].expand(shape)


def resample_matrix(w: torch.Tensor, proj: torch.Tensor | None, generator: torch.Generator, *,
                    column_share: float = DEFAULT_COLUMN_SHARE, scale: float = 1.0, fresh_units: bool = False,
                    stats: str = "row", hot: str | None = DEFAULT_HOT, retire: bool | None = None,
                    bias: torch.Tensor | None = None, units: str = "columns"
                    ) -> tuple[torch.Tensor, torch.Tensor | None, LayerResample, torch.Tensor | None]:
    """The defense on one matrix W. units "columns": W [out, in] is an output linear, `proj` the
    block's input projection [d*in, out] (or None) with its bias [d*in] (or None). units "rows": W
    [g*hidden, in] is the input linear itself (`proj` unused), `bias` its bias [g*hidden], given
    only for a GEGLU projection (g = 2: value rows, then gate rows; else g = 1, nothing to retire). Returns (new W, new proj or
    None when unchanged, facts, new bias or None when unchanged); dtypes kept. retire None:
    DEFAULT_RETIRE unless `fresh_units`; hot None: units that cannot be retired are kept."""
    if retire is None:
        retire = DEFAULT_RETIRE and not fresh_units
    if w.dim() != 2 or not w.is_floating_point():
        raise RevivalError(f"resampling needs a 2-D floating-point weight, got shape {list(w.shape)}.")
    if units not in ("columns", "rows"):
        raise RevivalError(f"units must be 'columns' or 'rows', got {units!r}.")
    if hot is not None and hot not in HOT_MODES:
        raise RevivalError(f"the hot-unit noise scale must be 'row' or 'column', got {hot!r}.")
    if units == "rows":
        return _resample_rows(w, generator, column_share=column_share, scale=scale, stats=stats, hot=hot,
                              retire=retire, bias=bias)
    out_dim, n_in = w.shape
    if proj is not None and (proj.dim() != 2 or proj.shape[1] != out_dim or proj.shape[0] % n_in
                             or proj.shape[0] // n_in not in (1, 2)):
        proj = None
    pruned = w == 0
    n = int(pruned.sum())
    info = LayerResample("", list(w.shape), n, 0, 0, False)
    if n == 0:
        return w, None, info, None
    hot_units = _hot_units(pruned, "columns", 1, column_share)
    can_retire = (retire and proj is not None and proj.shape[0] == 2 * n_in and bias is not None
                  and tuple(bias.shape) == (2 * n_in,))
    replace = bool(hot_units.any()) and (can_retire or hot is not None or (fresh_units and proj is not None))
    if not replace:   # Gaussian obfuscation's fill: the hot units (if any) keep their surviving weights
        info.hot_kept = int(hot_units.sum())
        out, _ = obfuscate_matrix(w, stats, generator, scale)
        return out, None, info, None
    # Gaussian row fill of the pruned positions and of every entry of the hot units
    out, _ = obfuscate_matrix(w.masked_fill(hot_units[None, :], 0), stats, generator, scale)
    if hot is not None and not can_retire:
        if hot == "column":   # hot units: zero-mean noise at the scale of the unit's own surviving weights
            out[:, hot_units] = _own_scale_noise(w, pruned, hot_units, generator, scale)
    info.hot_columns = int(hot_units.sum())
    info.survivors_changed = int((hot_units[None, :] & ~pruned).sum())
    new_proj = new_bias = None
    if can_retire:
        new_proj, new_bias = retire_units(proj, bias, hot_units, generator)
        info.retired = info.hot_columns
        # a dead unit's output column changes nothing: draw it as a live unit's would look, so it
        # fits the matrix's structure and value distribution
        out[:, hot_units] = map_fill(out, new_proj, hot_units, generator, 1.0)
        info.side = True
    elif fresh_units and proj is not None:
        k = info.hot_columns
        d = proj.shape[0] // n_in
        p = proj.double().reshape(d, n_in, out_dim)                      # [d, in, out]
        cold = ~hot_units
        mu = p[:, cold].mean(1, keepdim=True)                            # [d, 1, out]
        sd = p[:, cold].std(1, keepdim=True)
        fresh = mu + sd * torch.randn(d, k, out_dim, generator=generator, dtype=torch.float64)
        p_new = p.clone()
        p_new[:, hot_units] = fresh
        new_proj = p_new.reshape(d * n_in, out_dim).to(proj.dtype)
        info.side = True
        out[:, hot_units] = map_fill(out, new_proj, hot_units, generator, scale)
    return out, new_proj, info, new_bias


def _own_scale_noise(w: torch.Tensor, pruned: torch.Tensor, hot: torch.Tensor, generator: torch.Generator,
                     scale: float) -> torch.Tensor:
    """[out, k]: zero-mean noise for the hot columns at the rms of each unit's surviving weights."""
    x = w.double()
    keep = ~pruned
    cnt = keep.sum(0).double()
    rms = torch.sqrt((x * x * keep).sum(0) / cnt.clamp(min=1))
    rms = torch.where(cnt >= 2, rms, x[keep].abs().mean() if bool(keep.any()) else torch.ones_like(rms))
    k = int(hot.sum())
    vals = (scale * rms[hot][None, :] * torch.randn(w.shape[0], k, generator=generator, dtype=torch.float64)).to(w.dtype)
    return torch.where(vals == 0, torch.finfo(w.dtype).tiny, vals)


def _resample_rows(w: torch.Tensor, generator: torch.Generator, *, column_share: float, scale: float, stats: str,
                   hot: str | None, retire: bool, bias: torch.Tensor | None
                   ) -> tuple[torch.Tensor, None, LayerResample, torch.Tensor | None]:
    """resample_matrix on an input linear: its rows are the hidden units (see there)."""
    rows_n = w.shape[0]
    gated = bias is not None and tuple(bias.shape) == (rows_n,) and rows_n % 2 == 0
    pruned = w == 0
    n = int(pruned.sum())
    info = LayerResample("", list(w.shape), n, 0, 0, False, units="rows")
    if n == 0:
        return w, None, info, None
    g = 2 if gated else 1
    hot_units = _hot_units(pruned, "rows", g, column_share)
    can_retire = retire and gated
    if not bool(hot_units.any()) or (not can_retire and hot is None):
        info.hot_kept = int(hot_units.sum())
        out, _ = obfuscate_matrix(w, stats, generator, scale)
        return out, None, info, None
    entries = _entries(hot_units, w.shape, "rows", g)
    out, _ = obfuscate_matrix(w.masked_fill(entries, 0), stats, generator, scale)
    info.hot_columns = int(hot_units.sum())
    info.survivors_changed = int((entries & ~pruned).sum())
    new_bias = None
    if can_retire:
        out, new_bias = retire_units(out, bias, hot_units, generator)
        info.retired = info.hot_columns
    elif hot == "column":   # the unit's own scale: for an input linear, its own rows' rms
        t = _own_scale_noise(w.T, pruned.T, hot_units.repeat(g), generator, scale)
        out[hot_units.repeat(g)] = t.T
    return out, None, info, new_bias


def proj_bias_name(name: str) -> str | None:
    """The block's input-projection bias next to an ...ff.net.2.weight name (None for other names)."""
    p = proj_name(name)
    return p[: -len("weight")] + "bias" if p else None


def proj_name(name: str) -> str | None:
    """The block's input projection next to an ...ff.net.2.weight name (None for other names)."""
    return name[: -len("ff.net.2.weight")] + "ff.net.0.proj.weight" if name.endswith("ff.net.2.weight") else None


def unit_tensors(name: str) -> list[str]:
    """The other tensors resample reads for layer `name`: an output linear's input projection and
    its bias; an input linear's own bias and the block's output linear (whose columns count the
    hidden units: twice as many rows as units is a GEGLU projection, value and gate rows)."""
    axis = unit_axis(name)
    if axis is None:
        return []
    kind, other = axis
    if kind == "columns":
        return [other, other[: -len("weight")] + "bias"]
    return [name[: -len("weight")] + "bias", other]


def resample(tensors: Mapping[str, torch.Tensor], layers: list[str], seed: int | None = None, *,
             column_share: float = DEFAULT_COLUMN_SHARE, scale: float = 1.0, fresh_units: bool = False,
             stats: str = "row", hot: str | None = DEFAULT_HOT, retire: bool | None = None,
             progress: bool = False) -> tuple[dict[str, torch.Tensor], ResampleResult]:
    """The defense over `layers` of a state dict -> (updates, ResampleResult). Per-layer seeds
    from (seed, layer name); seed None (the default): secret OS entropy, two runs differ; an
    explicit seed: same seed -> same bytes. `retire`: hot units of a GEGLU block whose
    projection and bias are in `tensors` are retired (`retire_units`; None: DEFAULT_RETIRE unless
    `fresh_units`, the other treatment of the hot units). Layers are defended in order, each on
    the state the earlier ones left (a projection retired for an output linear is then itself a
    target as it stands). A layer whose hidden units it cannot tell is refused before any work."""
    from revival.attack.matrix import side_features

    check_scale(scale)
    check_seed(seed)
    if isinstance(column_share, bool) or not isinstance(column_share, (int, float)) or not 0 < column_share <= 1:
        raise RevivalError(f"the hot-unit share must be in (0, 1], got {column_share!r}.")
    check_stats(stats)
    if hot is not None and hot not in HOT_MODES:
        raise RevivalError(f"the hot-unit noise scale must be 'row' or 'column', got {hot!r}.")
    if retire is None:
        retire = DEFAULT_RETIRE and not fresh_units
    if retire and fresh_units:
        raise RevivalError("retire and fresh units are two treatments of the hot units: choose one.")
    check_matrices(tensors, layers, "the defense")
    check_units(layers)
    result = ResampleResult(seed, float(scale), float(column_share), stats=stats, fresh_units=bool(fresh_units),
                            hot=hot, retire=bool(retire))
    base = run_secret(seed)
    state = dict(tensors)
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="resample", unit="layer")
    for name in it:
        w = state[name]
        kind, _ = unit_axis(name)
        g = layer_generator(base, name)
        if kind == "rows":
            bname, oname = unit_tensors(name)
            bias, partner = state.get(bname), state.get(oname)
            # a gate to close only in a GEGLU projection: twice as many rows as the output linear has units
            gated = (bias is not None and partner is not None and partner.ndim == 2
                     and 2 * partner.shape[1] == w.shape[0])
            out, _, info, new_bias = resample_matrix(
                w.cpu(), None, g, column_share=column_share, scale=scale, stats=stats, hot=hot, retire=retire,
                bias=bias.cpu() if gated else None, units="rows")
            pname = None
            new_proj = None
        else:
            pname, bname = unit_tensors(name)
            proj = state.get(pname)
            if proj is not None and side_features(state, name, tuple(w.shape), {name: proj}) is None:
                proj = None                   # not a usable projection (shape, NaN)
            bias = state.get(bname) if proj is not None else None
            out, new_proj, info, new_bias = resample_matrix(
                w.cpu(), None if proj is None else proj.cpu(), g, column_share=column_share, scale=scale,
                fresh_units=fresh_units, stats=stats, hot=hot, retire=retire,
                bias=None if bias is None else bias.cpu())
        info.name = name
        result.layers.append(info)
        changed = {}
        if info.pruned:
            changed[name] = out.to(w.device)
        if new_proj is not None:
            changed[pname] = new_proj.to(state[pname].device)
        if new_bias is not None:
            changed[bname] = new_bias.to(state[bname].device)
        updates.update(changed)
        state.update(changed)
    result.seconds = time.perf_counter() - start
    return updates, result


@DEFENSE_METHODS.register("resample", "fill every pruned position and retire the hidden units where pruning "
                          "concentrated, with secret randomness (the default)", rank=0)
def resample_defense(tensors, layers, seed=None, *, scale=1.0, stats="row", progress=False, column_share=None,
                     fresh_units=False, hot=None, retire=None):
    """`resample` in the defenses' common signature (None: its defaults)."""
    kw = {"fresh_units": fresh_units, "stats": stats, "hot": hot}
    if retire is not None:
        kw["retire"] = retire
    if column_share is not None:
        kw["column_share"] = column_share
    return resample(tensors, layers, seed, scale=scale, progress=progress, **kw)


def _reads(layers) -> list[str]:
    """The block's other unit tensors resample reads (projection, biases); refuses, in one
    sentence, a layer whose hidden units it cannot tell."""
    check_units(layers)
    return [key for name in layers for key in unit_tensors(name)]


resample_defense.reads = _reads
