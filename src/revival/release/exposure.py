"""Is a release exposed? One criterion, shared by `revival inspect` and `revival audit`.

A release is exposed when something in its weights locates the positions a publisher changed:

- pruned layers: a layer holding more exact zeros than chance explains for its dtype and size
  (`revival.release.masks.layer_zero_test`, the same Poisson test that finds the layers to attack and to
  defend) -- a layer found pruned is exposed, whatever its zero fraction;
- repeated exact values: one value held far more often than the density of the tensor's values
  around it explains (a constant written by a tool: a fill, a closed gate's bias);
- copied values: far more pairs of exactly equal entries than that density explains (values
  copied from elsewhere in the layer).

Chance, for the last two, is read off the tensor itself: its entries are binned by the top bits of
their representation (bins 1/128 wide in relative terms, 1/32 for fp16; bf16 is too coarse to judge; `_BIN_BITS`), and within a bin every
representable value is taken as equally likely, so a value's expected count is its bin's count /
the bin's width in representable values. Observed counts are "far more" when their Poisson tail
probability is below `ALPHA` divided by the number of values tried and by the number of tensors
looked at (`release_exposure`): the claim is about the whole release, so chance may mark none of
its tensors more often than `ALPHA`, however many it has.

Other marks are reported but do not expose positions on their own:

- dead units: GEGLU units whose gate cannot open for any layer-normalised input of the block
  (pre-activation bound: gate row . LN bias + gate bias + sqrt(dim) x |gate row x LN weight| below
  `DEAD_PREACT`), and output columns with (almost) no weight;
- unit statistics: hidden units (columns of an output linear, rows of an input linear) whose
  spread is a robust outlier among the layer's (`OUTLIER_Z` robust standard deviations, log scale).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from revival.errors import RevivalError
from revival.release.masks import CHANCE_ALPHA, layer_zero_test, poisson_tail

ALPHA = 1e-6
DEAD_PREACT = -4.0    # gelu(-4) ~ -1e-4: a gate whose pre-activation never exceeds this writes ~nothing
OUTLIER_Z = 8.0
_BIN_BITS = {torch.float32: 16, torch.float16: 5, torch.bfloat16: 0, torch.float64: 45}   # bins 1/128 (fp32), 1/32 (fp16); bf16: too coarse to judge
_INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float64: torch.int64}
FEED_FORWARD = re.compile(r"(ff\.net\.0\.proj|ff\.net\.2|mlp\.fc1|mlp\.fc2|intermediate\.dense|(?<!attention\.)output\.dense)"
                          r"\.(weight|bias)$")
_INPUT = re.compile(r"(ff\.net\.0\.proj|mlp\.fc1|intermediate\.dense)\.weight$")
_OUTPUT = re.compile(r"(ff\.net\.2|mlp\.fc2|(?<!attention\.)output\.dense)\.weight$")


@dataclass
class Exposure:
    """exposed: something locates the changed positions; reasons: one sentence each; marks: what
    was found, per kind ({"pruned_layers", "repeated_values", "copied_values", "dead_units",
    "unit_outliers"} -> per-tensor facts); signs: the kinds of marks found (exposing or not)."""

    exposed: bool
    reasons: list[str] = field(default_factory=list)
    marks: dict = field(default_factory=dict)

    @property
    def signs(self) -> list[str]:
        return [k for k, v in self.marks.items() if v]

    def to_dict(self) -> dict:
        return {"exposed": self.exposed, "reasons": list(self.reasons), "signs": self.signs, "marks": self.marks}


def _grid_bits(bits: torch.Tensor, k: int) -> int:
    """The low mantissa bits that (nearly) every entry leaves at zero (e.g. 13 for fp32 weights
    that were fp16): the values' effective grid, for the chance model."""
    for t in range(k, 0, -1):
        if float(((bits & ((1 << t) - 1)) == 0).double().mean()) >= 0.999:
            return t
    return 0


def repeated_values(t: torch.Tensor, alpha: float = ALPHA) -> dict | None:
    """The most over-represented exact non-zero value of `t` and the excess of equal pairs, with
    their Poisson tail probabilities (see the module doc); None when neither is beyond chance."""
    if t.dtype not in _INT or t.numel() < 8:
        return None
    flat = t.detach().reshape(-1).cpu()
    flat = flat[flat != 0]
    if flat.numel() < 8:
        return None
    k = _BIN_BITS[t.dtype]
    bits = flat.contiguous().view(_INT[t.dtype]).long()
    grid = _grid_bits(bits, k)      # weights stored once in a coarser dtype lie on its grid
    if k - grid < 2:
        return None                 # bins of a handful of values: no resolution to judge repeats
    bins = bits >> k
    width = float(2 ** (k - grid))
    b_u, b_inv, b_cnt = torch.unique(bins, return_inverse=True, return_counts=True)
    v_u, v_inv, v_cnt = torch.unique(bits, return_inverse=True, return_counts=True)
    v_bin = torch.zeros(v_u.numel(), dtype=torch.long)
    v_bin[v_inv] = b_inv
    out: dict = {}
    many = (v_cnt >= 3).nonzero().flatten()
    if many.numel():
        c = v_cnt[many].double()
        lam = (b_cnt[v_bin[many]].double() - c + 1) / width
        # the strongest candidates first (largest excess over the expectation)
        order = torch.argsort(c - lam, descending=True)[:20]
        tried = max(1, int(v_u.numel()))    # every distinct value could have been the one
        for i in order.tolist():
            p = poisson_tail(int(c[i]), float(lam[i]))
            if p < alpha / tried:
                value = float(flat[(bits == v_u[many[i]]).nonzero()[0, 0]])
                out["value"] = {"value": value, "count": int(c[i]), "expected": round(float(lam[i]), 6), "p_value": p}
                break
    pairs = int((v_cnt * (v_cnt - 1) // 2).sum())
    if pairs >= 10:
        expected = float((b_cnt.double() * (b_cnt.double() - 1) / 2).sum()) / width
        p = poisson_tail(pairs, expected)
        if p < alpha:
            out["pairs"] = {"equal_pairs": pairs, "expected": round(expected, 3), "p_value": p}
    return out or None


def dead_units(tensors: Mapping[str, torch.Tensor], name: str) -> dict | None:
    """Units of the GEGLU projection `name` [2*hidden, dim] (with its bias) whose gate cannot open
    for any layer-normalised input (see the module doc), or of the output linear `name` whose
    column has (almost) no weight. None when there are none (or nothing to judge from)."""
    w = tensors[name]
    if name.endswith("ff.net.0.proj.weight"):
        bias = tensors.get(name[: -len("weight")] + "bias")
        if bias is None or w.ndim != 2 or w.shape[0] % 2 or bias.numel() != w.shape[0]:
            return None
        h, d = w.shape[0] // 2, w.shape[1]
        gate, gb = w[h:].double().cpu(), bias[h:].double().cpu()
        prefix = name[: -len("ff.net.0.proj.weight")]
        gamma, beta = tensors.get(prefix + "norm3.weight"), tensors.get(prefix + "norm3.bias")
        gamma = torch.ones(d, dtype=torch.float64) if gamma is None or gamma.numel() != d else gamma.double().cpu()
        beta = torch.zeros(d, dtype=torch.float64) if beta is None or beta.numel() != d else beta.double().cpu()
        bound = gate @ beta + gb + math.sqrt(d) * (gate * gamma).norm(dim=1)
        dead = bound < DEAD_PREACT
        if bool(dead.any()):
            return {"kind": "closed gates", "units": int(dead.sum()), "of": h}
        return None
    if _OUTPUT.search(name) and w.ndim == 2:
        norms = w.double().cpu().norm(dim=0)
        silent = norms < 1e-3 * norms.median()
        if bool(silent.any()):
            return {"kind": "silent output columns", "units": int(silent.sum()), "of": w.shape[1]}
    return None


def unit_outliers(name: str, w: torch.Tensor, z: float = OUTLIER_Z) -> dict | None:
    """Hidden units whose spread (std of the column of an output linear, of the row of an input
    linear) lies more than `z` robust standard deviations from the layer's (log scale)."""
    if w.ndim != 2 or w.shape[0] < 8 or w.shape[1] < 8:
        return None
    x = w.double().cpu()
    sd = x.std(0) if _OUTPUT.search(name) else x.std(1) if _INPUT.search(name) else None
    if sd is None:
        return None
    ls = sd.clamp(min=1e-30).log()
    med = ls.median()
    mad = 1.4826 * (ls - med).abs().median()
    if not float(mad) > 0:
        return None
    far = ((ls - med).abs() / mad) > z
    return {"units": int(far.sum()), "of": int(sd.numel())} if bool(far.any()) else None


def release_exposure(tensors: Mapping[str, torch.Tensor], layers: Sequence[str] | None = None) -> Exposure:
    """The exposure of a release (see the module doc). `layers`: the layers to judge (None: every
    2-D floating-point weight is tested for pruning; the marks are looked for in the layers found
    pruned, or, when none is, in every feed-forward weight and bias). Each layer given or found is
    looked at together with its block's feed-forward tensors (projection, biases)."""
    from revival.release.layers import detect_pruned_layers

    if layers is None:
        found = detect_pruned_layers(tensors)
        targets = [p.name for p in found]
    else:
        targets = list(layers)
        missing = [n for n in targets if n not in tensors]
        if missing:
            raise RevivalError(f"layer {missing[0]!r} is not in the release.")
        found = [hit for hit in (layer_zero_test(n, tensors[n], alpha=CHANCE_ALPHA) for n in targets
                                 if tensors[n].ndim == 2 and tensors[n].is_floating_point()) if hit is not None]
    scan = set(targets)
    ff = [n for n in tensors if FEED_FORWARD.search(n)]
    if layers is None and not targets:
        scan.update(ff)
    for n in list(scan):   # the block's other feed-forward tensors
        block = n.rsplit(".ff.", 1)[0] + ".ff." if ".ff." in n else None
        if block:
            scan.update(m for m in ff if m.startswith(block))
    scan = [n for n in tensors if n in scan and tensors[n].is_floating_point()]
    marks: dict = {"pruned_layers": {p.name: {"zeros": p.zeros, "expected": p.expected, "p_value": p.p_value}
                                     for p in found},
                   "repeated_values": {}, "copied_values": {}, "dead_units": {}, "unit_outliers": {}}
    alpha = ALPHA / max(1, len(scan))   # the family of tests: every tensor looked at
    for n in scan:
        t = tensors[n]
        rep = repeated_values(t, alpha)
        if rep and "value" in rep:
            marks["repeated_values"][n] = rep["value"]
        if rep and "pairs" in rep:
            marks["copied_values"][n] = rep["pairs"]
        if t.ndim == 2:
            dead = dead_units(tensors, n)
            if dead:
                marks["dead_units"][n] = dead
            out = unit_outliers(n, t)
            if out:
                marks["unit_outliers"][n] = out
    reasons = []
    if found:
        zeros = sum(p.zeros for p in found)
        reasons.append(f"{len(found)} layer(s) hold more exact zeros than chance explains ({zeros:,} in all): the "
                       "zeros mark the pruned positions, and the revival attack reads them (`revival attack`).")
    for n, r in marks["repeated_values"].items():
        reasons.append(f"{n} holds the value {r['value']:.6g} {r['count']} times where chance explains "
                       f"{r['expected']:.2g}: a constant written by a tool marks the positions it was written to.")
    for n, r in marks["copied_values"].items():
        reasons.append(f"{n} holds {r['equal_pairs']} pairs of equal values where chance explains "
                       f"{r['expected']:.1f}: copied values mark the positions they were copied to.")
    return Exposure(bool(reasons), reasons, marks)
