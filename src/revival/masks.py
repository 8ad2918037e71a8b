"""Pruned positions: the exact zeros of the target layers, and how they cluster.

Pruning-based unlearning (ConceptPrune) sets weights of ``ff.net.2`` to exactly 0 and ships no
mask; the zeros are the mask. ConceptPrune's masks are element-wise but cluster in input columns
(the GEGLU units whose activation is larger for the concept), which the column statistics show.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from .errors import RevivalError


def pruned_mask(w: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the pruned positions: entries exactly 0 (either sign of zero)."""
    return w == 0


@dataclass(frozen=True)
class MaskStats:
    """Pruned positions of one weight matrix [out, in] (rows = output neurons, columns = inputs)."""

    name: str
    shape: tuple[int, ...]
    total: int  # entries
    pruned: int  # exact zeros
    fraction: float  # pruned / total
    rows_touched: int  # rows with at least one pruned entry
    columns_touched: int  # columns with at least one pruned entry
    max_per_row: int  # most pruned entries in one row
    max_per_column: int  # most pruned entries in one column
    top1pct_column_share: float  # share of pruned entries in the 1% of columns holding the most
    top10pct_column_share: float  # the same for the top 10% of columns

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def mask_stats(name: str, w: torch.Tensor) -> MaskStats:
    """Counts and row/column clustering of the exact zeros of `w` (1-D or 2-D; more dims are
    flattened to [shape[0], rest])."""
    m = pruned_mask(w)
    m2 = m.reshape(m.shape[0], -1) if m.dim() >= 2 else m.reshape(1, -1)
    idx = m2.nonzero()  # [pruned, 2]: light on memory when few entries are pruned
    del m, m2
    rows_n, cols_n = (w.shape[0], w.numel() // w.shape[0]) if w.dim() >= 2 else (1, w.numel())
    pruned = idx.shape[0]
    total = w.numel()
    per_row = torch.bincount(idx[:, 0], minlength=rows_n)
    per_col = torch.bincount(idx[:, 1], minlength=cols_n)
    return MaskStats(
        name=name, shape=tuple(w.shape), total=total, pruned=pruned,
        fraction=pruned / total if total else 0.0,
        rows_touched=int((per_row > 0).sum()), columns_touched=int((per_col > 0).sum()),
        max_per_row=int(per_row.max()) if per_row.numel() else 0,
        max_per_column=int(per_col.max()) if per_col.numel() else 0,
        top1pct_column_share=_top_share(per_col, 0.01, pruned),
        top10pct_column_share=_top_share(per_col, 0.10, pruned),
    )


def _top_share(per_col: torch.Tensor, frac: float, pruned: int) -> float:
    if pruned == 0:
        return 0.0
    k = max(1, math.ceil(frac * per_col.numel()))
    return float(per_col.sort(descending=True).values[:k].sum()) / pruned


@dataclass(frozen=True)
class MaskReport:
    """Pruned positions over all target layers."""

    layers: tuple[MaskStats, ...]

    @property
    def pruned(self) -> int:
        return sum(s.pruned for s in self.layers)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.layers)

    @property
    def fraction(self) -> float:
        return self.pruned / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"layers": [s.to_dict() for s in self.layers],
                "totals": {"layers": len(self.layers), "layers_pruned": sum(s.pruned > 0 for s in self.layers),
                           "total": self.total, "pruned": self.pruned, "fraction": self.fraction}}

    def require_pruned(self, where: str = "the checkpoint") -> "MaskReport":
        """RevivalError unless some target layer has pruned (exactly zero) entries."""
        if self.pruned == 0:
            raise RevivalError(f"{where} has no pruned (exactly zero) weights in its "
                               f"{len(self.layers)} target layer(s); there is nothing to revive.")
        return self

    def table(self) -> str:
        rows = [("layer", "shape", "pruned", "frac", "cols", "top1%col", "max/row")]
        for s in self.layers:
            rows.append((s.name, "x".join(map(str, s.shape)), str(s.pruned), f"{s.fraction:.4f}",
                         str(s.columns_touched), f"{s.top1pct_column_share:.3f}", str(s.max_per_row)))
        rows.append(("total", "", str(self.pruned), f"{self.fraction:.4f}", "", "", ""))
        return _format_table(rows)


def mask_report(tensors: Mapping[str, torch.Tensor], layers: list[str]) -> MaskReport:
    """MaskStats of every target layer."""
    return MaskReport(tuple(mask_stats(name, tensors[name]) for name in layers))


def _format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def synthetic_prune_mask(w: torch.Tensor, ratio: float = 0.02, *, seed: int = 0,
                         concept_columns: float = 0.3) -> torch.Tensor:
    """A ConceptPrune-like mask for tests and benchmarks, from synthetic activations.

    Draws heavy-tailed per-column activation norms for "target" and "base" prompts; per row,
    marks the top ``ratio * in_features`` columns by the WANDA score ``|W| * a_target`` and keeps
    those where ``a_target > a_base`` (true for about `concept_columns` of the columns): an
    element-wise mask that clusters in columns, as in PAPER.md.
    """
    if not 0 < ratio <= 1:
        raise RevivalError(f"ratio must be in (0, 1], got {ratio}.")
    g = torch.Generator().manual_seed(seed)
    n_in = w.shape[1]
    a_base = torch.randn(n_in, generator=g).exp()
    boost = torch.where(torch.rand(n_in, generator=g) < concept_columns,
                        1.5 + torch.rand(n_in, generator=g), 0.5 + 0.4 * torch.rand(n_in, generator=g))
    a_target = a_base * boost
    score = w.abs().float() * a_target
    k = max(1, round(ratio * n_in))
    top = score.topk(k, dim=1).indices
    mask = torch.zeros(w.shape, dtype=torch.bool)
    mask.scatter_(1, top, True)
    return mask & (a_target > a_base)
