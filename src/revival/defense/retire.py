"""Retire a hidden unit: close it for every input and give its output column a live unit's look.

`retire_units` redraws a GEGLU unit's value and gate rows of the block's input projection and
closes its gate with a bias drawn far below zero (no exact constant: a per-unit draw from the
layer's own bias distribution, shifted by the gate row's largest possible response plus a
continuous margin); `map_fill` draws the retired units' output columns as a live unit's would
look (the side-information map from their new rows, a residual with the other units' covariance,
the layer's own value distribution). Used by `resample` (defense/resample.py).
"""
from __future__ import annotations

import torch

from revival.defense.base import smooth_sample

def map_fill(w: torch.Tensor, proj: torch.Tensor, hot: torch.Tensor, generator: torch.Generator,
              scale: float) -> torch.Tensor:
    """Output columns [out, k] for the `hot` units from their (new) input rows in `proj`
    [d*in, out]: the ridge map side vectors -> output column fitted on the other units, plus
    `scale` x a residual drawn with the empirical covariance of the map's leave-one-out residuals
    on the other units (R z / sqrt(n), z ~ N(0, I)): the residual then has the other columns'
    low-rank structure too, not only their spread. W's dtype, no exact zero."""
    from revival.attack.attackers.columns import fit_column_map

    out_dim, n_in = w.shape
    d = proj.shape[0] // n_in
    side = proj.double().reshape(d, n_in, out_dim).permute(0, 2, 1).float()   # [d, out, in]
    full, r = fit_column_map(w.float(), side, hot, loo=True)                   # r: [out, n_cold], out of sample
    centre = full.double()[:, hot]
    r = r - r.mean(1, keepdim=True)
    z = torch.randn(r.shape[1], int(hot.sum()), generator=generator, dtype=torch.float64)
    values = centre + scale * (r @ z) / max(1, r.shape[1] - 1) ** 0.5
    if scale == 1.0:
        values = match_marginal(values, w.double()[:, ~hot].flatten(), generator)
    values = values.to(w.dtype)
    return torch.where(values == 0, torch.finfo(w.dtype).tiny, values)


def match_marginal(values: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each column of `values` [out, k] keeps its rank order but takes its values from a fresh
    draw of a smooth density fitted to `pool` (the other units' weights; `smooth_sample`): the
    entries then follow the layer's own distribution (its peak at zero and its tails), which a
    Gaussian draw does not, and no value is a copy of an existing one."""
    out = torch.empty_like(values)
    for j in range(values.shape[1]):
        sample = smooth_sample(pool, values.shape[0], generator).sort().values
        out[values[:, j].argsort(), j] = sample
    return out


RETIRED_GATE_MARGIN = (9.0, 12.0)  # a retired gate's pre-activation stays below -(a draw in this range):
                                   # gelu(-9) ~ -1e-18, so the unit writes nothing, for any input
RETIRED_GATE_SCALE = 1e-3   # the retired gate rows' spread, relative to the other gate rows'
INPUT_RMS_BOUND = 4.0       # per-feature rms bound assumed for the block's (layer-normalised) input


def retire_units(proj: torch.Tensor, bias: torch.Tensor, hot: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Retire the hidden units `hot` of a GEGLU input projection [2*in, dim] (value rows, then
    gate rows, as diffusers' GEGLU chunks them) with its bias [2*in]: their value rows (and value
    biases) are redrawn from the other units' statistics, their gate rows at RETIRED_GATE_SCALE of
    the other gate rows' spread, and their gate bias drawn per unit from the low half of the other
    gate biases' distribution, shifted down by the gate row's largest possible response
    (INPUT_RMS_BOUND x sqrt(dim) x its norm) plus a margin drawn in RETIRED_GATE_MARGIN: the gate's
    pre-activation is below -9 for any input of the block, gelu(gate) ~ 0, and the unit contributes
    nothing whatever its output column holds. No two retired biases are equal (continuous draws).
    Nothing of the unit's own weights is left to revive it from (an attacker sees a dead unit)."""
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
    gb = b[n_in:]
    m, s = gb[cold].mean(), gb[cold].std() if int(cold.sum()) > 1 else torch.tensor(0.0, dtype=torch.float64)
    reach = INPUT_RMS_BOUND * p.shape[1] ** 0.5 * gate[hot].norm(dim=1)
    lo, hi = RETIRED_GATE_MARGIN
    margin = lo + (hi - lo) * torch.rand(k, generator=generator, dtype=torch.float64)
    low_half = -torch.randn(k, generator=generator, dtype=torch.float64).abs()
    gb[hot] = torch.minimum(m + s * low_half, m) - reach - margin
    vb = b[:n_in]
    vb[hot] = vb[cold].mean() + vb[cold].std() * torch.randn(k, generator=generator, dtype=torch.float64)
    return p.to(proj.dtype), b.to(bias.dtype)
