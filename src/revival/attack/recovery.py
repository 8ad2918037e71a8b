"""How well a revived checkpoint recovers the pruned weights of the original.

Pruned positions are the exact zeros of the *pruned* checkpoint (what the attacker sees). With
O = original, P = pruned, R = revived, per layer and overall:

* ``pruned``              number of pruned positions;
* ``kept_fraction``       share of pruned positions the attack filled (R != 0);
* ``sign_acc_kept``       share of the filled positions whose sign equals the original's;
* ``sign_acc_all``        share of ALL pruned positions with the original's sign (0 counts wrong)
                          -- the paper's "sign recovery";
* ``rel_error``           ||R - O|| / ||O - P|| over the pruned positions (1.0 = no better than
                          leaving the zeros; lower is better);
* ``cosine``              cosine between (R - P) and (O - P) over the pruned positions;
* ``unpruned_changed``    entries outside the pruned positions where R differs from P (an attack
                          must leave them bit-identical: this should be 0);
* ``pruned_vs_original``  entries outside the pruned positions where P differs from O (0 when P
                          really is a pruning of O);
* ``zero_in_original``    pruned positions that were already 0 in O (they count as wrong signs).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from revival.errors import RevivalError


@dataclass
class LayerScore:
    name: str
    shape: list[int]
    pruned: int = 0
    kept: int = 0
    sign_correct_kept: int = 0
    unpruned_changed: int = 0
    pruned_vs_original: int = 0
    zero_in_original: int = 0
    # sums over pruned positions (float64) behind rel_error and cosine
    err2: float = 0.0  # sum (R - O)^2
    base2: float = 0.0  # sum (O - P)^2
    rev2: float = 0.0  # sum (R - P)^2
    dot: float = 0.0  # sum (R - P)(O - P)

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.pruned if self.pruned else math.nan

    @property
    def sign_acc_kept(self) -> float:
        return self.sign_correct_kept / self.kept if self.kept else math.nan

    @property
    def sign_acc_all(self) -> float:
        return self.sign_correct_kept / self.pruned if self.pruned else math.nan

    @property
    def rel_error(self) -> float:
        return math.sqrt(self.err2 / self.base2) if self.base2 > 0 else math.nan

    @property
    def cosine(self) -> float:
        den = math.sqrt(self.rev2 * self.base2)
        return self.dot / den if den > 0 else math.nan

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("err2", "base2", "rev2", "dot")}
        for k in ("kept_fraction", "sign_acc_kept", "sign_acc_all", "rel_error", "cosine"):
            v = getattr(self, k)
            d[k] = None if math.isnan(v) else round(v, 6)
        return d


@dataclass
class ScoreResult:
    layers: list[LayerScore] = field(default_factory=list)

    @property
    def total(self) -> LayerScore:
        t = LayerScore("overall", [])
        for s in self.layers:
            for k in ("pruned", "kept", "sign_correct_kept", "unpruned_changed", "pruned_vs_original",
                      "zero_in_original", "err2", "base2", "rev2", "dot"):
                setattr(t, k, getattr(t, k) + getattr(s, k))
        return t

    def to_dict(self) -> dict:
        total = self.total.to_dict()
        total.pop("name")
        total.pop("shape")
        total["layers"] = len(self.layers)
        return {"layers": [s.to_dict() for s in self.layers], "overall": total}

    def table(self) -> str:
        from revival.release.masks import _format_table

        def f(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.4f}"

        rows = [("layer", "pruned", "kept", "sign@kept", "sign@all", "rel.err", "cosine", "unpruned chg")]
        for s in self.layers + [self.total]:
            rows.append((s.name, str(s.pruned), f(s.kept_fraction), f(s.sign_acc_kept), f(s.sign_acc_all),
                         f(s.rel_error), f(s.cosine), str(s.unpruned_changed)))
        return _format_table(rows)


def score_matrix(name: str, original: torch.Tensor, pruned: torch.Tensor, revived: torch.Tensor) -> LayerScore:
    """LayerScore of one matrix; RevivalError on a shape or dtype mismatch."""
    for label, t in (("pruned", pruned), ("revived", revived)):
        if tuple(t.shape) != tuple(original.shape):
            raise RevivalError(f"layer {name} has shape {list(original.shape)} in the original but "
                               f"{list(t.shape)} in the {label} checkpoint.")
        if t.dtype != original.dtype:
            raise RevivalError(f"layer {name} has dtype {_dt(original.dtype)} in the original but "
                               f"{_dt(t.dtype)} in the {label} checkpoint.")
    for label, t in (("original", original), ("pruned", pruned), ("revived", revived)):
        if not bool(torch.isfinite(t).all()):
            raise RevivalError(f"layer {name} of the {label} checkpoint contains NaN or infinite weights.")
    s = LayerScore(name, list(original.shape))
    mask = pruned == 0
    s.pruned = int(mask.sum())
    s.unpruned_changed = int((~mask & (revived != pruned)).sum())
    s.pruned_vs_original = int((~mask & (pruned != original)).sum())
    if s.pruned == 0:
        return s
    o = original[mask].double()
    p = pruned[mask].double()
    r = revived[mask].double()
    s.zero_in_original = int((o == 0).sum())
    filled = r != 0
    s.kept = int(filled.sum())
    s.sign_correct_kept = int((filled & (torch.sign(r) == torch.sign(o))).sum())
    s.err2 = float(((r - o) ** 2).sum())
    s.base2 = float(((o - p) ** 2).sum())
    s.rev2 = float(((r - p) ** 2).sum())
    s.dot = float(((r - p) * (o - p)).sum())
    return s


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def score(original: Mapping[str, torch.Tensor], pruned: Mapping[str, torch.Tensor],
          revived: Mapping[str, torch.Tensor], layers: list[str]) -> ScoreResult:
    """Per-layer and overall sign recovery and reconstruction of `revived` vs `original`.

    `layers` must exist in all three (same shape and dtype); RevivalError otherwise.
    A changed unpruned entry does not raise: it is counted in ``unpruned_changed``.
    """
    if not layers:
        raise RevivalError("no layers were given to score.")
    result = ScoreResult()
    for name in layers:
        for label, t in (("original", original), ("pruned", pruned), ("revived", revived)):
            if name not in t:
                raise RevivalError(f"layer {name} is missing from the {label} checkpoint.")
        result.layers.append(score_matrix(name, original[name], pruned[name], revived[name]))
    return result


def score_checkpoints(original, pruned, revived, pattern: str | None = None) -> ScoreResult:
    """`score` on three checkpoint paths; the target layers are chosen in the pruned one."""
    from revival.io import load_checkpoint
    from revival.release.layers import DEFAULT_LAYERS, select_layers

    ck_o, ck_p, ck_r = load_checkpoint(original), load_checkpoint(pruned), load_checkpoint(revived)
    layers = select_layers(ck_p.tensors, pattern or DEFAULT_LAYERS)
    result = score(ck_o.tensors, ck_p.tensors, ck_r.tensors, layers)
    if result.total.pruned == 0:
        raise RevivalError(f"{pruned} has no pruned (exactly zero) weights in its {len(layers)} "
                           "target layer(s); there is nothing to score.")
    return result


def sign_scores(original: Mapping[str, torch.Tensor], release: Mapping[str, torch.Tensor],
                updates: Mapping[str, torch.Tensor], truth: Mapping[str, torch.Tensor]) -> dict:
    """Signs the attacker wrote at the true positions: accuracy over the true positions it changed
    ("kept"), over all true positions ("all", unchanged ones count wrong), and how many of its
    changes fell outside the true positions ("outside")."""
    right = changed_true = n_true = outside = 0
    for name, t in truth.items():
        n_true += int(t.sum())
        if name not in updates:
            continue
        o, r, u = original[name].float().cpu(), release[name].float().cpu(), updates[name].float().cpu()
        ch = u != r
        k = ch & t
        changed_true += int(k.sum())
        right += int(((torch.sign(u) == torch.sign(o)) & k).sum())
        outside += int((ch & ~t).sum())
    return {"kept": right / changed_true if changed_true else None,
            "all": right / n_true if n_true else None, "changed_true": changed_true, "outside": outside}
