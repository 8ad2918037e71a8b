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

from revival.errors import RevivalError


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


# --------------------------------------------------------------------------- chance vs pruning
#
# Trained dense weights hold almost no exact zeros: a value becomes exactly 0 only when it is
# rounded to zero in the stored dtype, i.e. when |w| <= h, half the dtype's smallest subnormal
# (fp16: 2**-25 ~ 3e-8; bf16 and fp32: < 1e-40). With f(0) the density of the weights at zero,
# the expected count of such zeros in n entries is n * 2h * f(0). f(0) is read off the matrix
# itself: if t is the k-th smallest non-zero |w|, then 2 t f(0) ~ k / n, so the expected count
# is h * k / t. Stray exact zeros (e.g. a few in a 12M-entry embedding table) add a floor of
# STRAY_RATE per entry. Observed zeros are "more than chance explains" when the Poisson tail
# probability of seeing that many is below `alpha`.

STRAY_RATE = 1e-6     # exact zeros per entry that trained weights may hold for no reason we model
CHANCE_ALPHA = 1e-6   # Poisson tail probability below which zeros are not chance
MIN_ZEROS = 2         # a single exact zero never marks a layer as pruned


def rounding_zero_bound(dtype: torch.dtype) -> float:
    """h: values with |w| <= h are stored as exactly 0 in `dtype` (half the smallest subnormal)."""
    fi = torch.finfo(dtype)
    return 0.5 * fi.tiny * fi.eps


def chance_zeros(w: torch.Tensor, k: int | None = None, max_sample: int = 1 << 20) -> float:
    """Expected number of exact zeros a dense (unpruned) matrix like `w` holds by chance, for
    its dtype and size (see the section comment): h * k / t_k + STRAY_RATE * n.

    The density at zero is read off an evenly strided sample of at most `max_sample` entries
    (deterministic), so a large matrix costs one small copy: with s sampled entries and t_k the
    k-th smallest non-zero |w| among them, the expectation is h * k * (n / s) / t_k.
    """
    n = w.numel()
    floor = STRAY_RATE * n
    flat = w.reshape(-1)
    stride = max(1, -(-n // max_sample))
    sample = flat[::stride].float()
    nz = sample[sample != 0].abs()
    if nz.numel() == 0:
        return floor
    k = k or max(32, nz.numel() // 1000)
    k = min(k, nz.numel())
    t = float(nz.kthvalue(k).values)
    h = rounding_zero_bound(w.dtype)
    return (h * k * (n / sample.numel()) / t if t > 0 else float(n)) + floor


def poisson_tail(observed: int, expected: float) -> float:
    """P(X >= observed) for X ~ Poisson(expected) (log-space; exact enough for a test)."""
    if observed <= 0:
        return 1.0
    if expected <= 0:
        return 0.0
    lam = float(expected)
    if observed <= lam:      # 1 - P(X < observed): sum downwards from observed - 1, where terms fall
        j = observed - 1
        term = -lam + j * math.log(lam) - math.lgamma(j + 1)
        first, lower = term, 0.0
        while j >= 0 and term > first - 40:
            lower += math.exp(term)
            term -= math.log(lam) - math.log(j) if j > 0 else float("inf")
            j -= 1
        return max(0.0, min(1.0, 1.0 - lower))
    # sum_{j >= observed} e^-lam lam^j / j!, from the first term's log, a few hundred terms
    log_term = -lam + observed * math.log(lam) - math.lgamma(observed + 1)
    total, term, j = 0.0, log_term, observed
    for _ in range(1000):
        total += math.exp(term)
        j += 1
        term += math.log(lam) - math.log(j)
        if term < log_term - 40:
            break
    return min(1.0, total)


@dataclass(frozen=True)
class ZeroPattern:
    """How the exact zeros of one matrix [out, in] cluster, and which method they look like.

    kind: "none" | "entries" (scattered entries) | "rows" (whole rows) | "columns" (whole
        columns) | "all" (the whole matrix is zero).
    row_share / column_share: share of the zeros that lie in whole-zero rows / columns.
    column_clustering: columns touched / columns a uniformly random mask of the same per-row
        counts would touch (1 = no clustering; ConceptPrune's sparse masks are well below 1).
    column_dispersion: variance of the per-column counts / the variance a uniformly random
        mask of the same per-row counts would give (1 = no clustering; dense masks over few
        columns, where nearly every column is touched anyway, still show it).
    fixed_per_row: share of touched rows holding exactly the most common per-row count
        (a per-row top-k leaves the same count in every row).
    method: the pruning-based unlearning these zeros look like: "conceptprune" (ff.net.2 or
        another linear, entry-level, clustered in columns), "cad" (entry-level, a fixed count
        in (nearly) every row), "neurons" (whole rows), "unknown", or "" when not pruned.
    """

    zeros: int
    fraction: float
    kind: str
    whole_rows: int
    whole_columns: int
    row_share: float
    column_share: float
    rows_touched: float
    column_clustering: float
    fixed_per_row: float
    method: str
    column_dispersion: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def clustered(self) -> bool:
        return self.column_clustering < 0.7 or self.column_dispersion > 4.0

    def describe(self) -> str:
        if self.kind == "none":
            return "no exact zeros"
        if self.kind == "all":
            return "every entry is zero"
        if self.kind == "rows":
            return f"{self.whole_rows} whole rows"
        if self.kind == "columns":
            return f"{self.whole_columns} whole columns"
        how = []
        if self.clustered:
            how.append(f"clustered in columns (x{self.column_dispersion:.1f} uniform variance)")
        if self.fixed_per_row >= 0.8 and self.rows_touched >= 0.9:
            how.append("a fixed count per row")
        return "entries" + (", " + ", ".join(how) if how else "")


def zero_pattern(w: torch.Tensor, name: str = "") -> ZeroPattern:
    """Describe the exact zeros of the 2-D matrix `w` (entries, columns, whole rows) and guess
    the method behind them; `name` (the layer's key) refines the guess."""
    if w.ndim != 2:
        raise RevivalError(f"zero_pattern needs a 2-D matrix, got shape {tuple(w.shape)}.")
    m = w == 0
    rows_n, cols_n = m.shape
    zeros = int(m.sum())
    per_row = m.sum(1)
    per_col = m.sum(0)
    full_r = per_row == cols_n
    full_c = per_col == rows_n
    if zeros == 0:
        return ZeroPattern(0, 0.0, "none", 0, 0, 0.0, 0.0, 0.0, 1.0, 0.0, "", 1.0)
    row_share = float(per_row[full_r].sum()) / zeros
    col_share = float(per_col[full_c].sum()) / zeros
    touched = per_row > 0
    counts = per_row[touched]
    mode = int(counts.mode().values) if counts.numel() else 0
    fixed = float((counts == mode).float().mean()) if counts.numel() else 0.0
    # columns a random mask with the same per-row counts would touch
    p_untouched = torch.exp(torch.log1p(-(per_row.double() / cols_n).clamp(max=1 - 1e-12)).sum())
    expected_cols = cols_n * (1 - float(p_untouched))
    clustering = float((per_col > 0).sum()) / expected_cols if expected_cols > 0 else 1.0
    p_row = per_row.double() / cols_n
    var_uniform = float((p_row * (1 - p_row)).sum())
    dispersion = float(per_col.double().var(unbiased=False)) / var_uniform if var_uniform > 0 else 1.0
    if zeros == w.numel():
        kind = "all"
    elif row_share >= 0.9:
        kind = "rows"
    elif col_share >= 0.9:
        kind = "columns"
    else:
        kind = "entries"
    rows_touched = float(touched.float().mean())
    if kind == "rows":
        method = "neurons"
    elif kind == "entries" and fixed >= 0.8 and rows_touched >= 0.9:
        method = "cad"
    elif kind == "entries" and (clustering < 0.7 or dispersion > 4.0):
        method = "conceptprune"
    else:
        method = "unknown"
    return ZeroPattern(zeros, zeros / w.numel(), kind, int(full_r.sum()), int(full_c.sum()),
                       round(row_share, 4), round(col_share, 4), round(rows_touched, 4),
                       round(clustering, 4), round(fixed, 4), method, round(dispersion, 3))


@dataclass(frozen=True)
class PrunedLayer:
    """A 2-D weight whose exact zeros are more than chance explains (see `detect_pruned_layers`)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    zeros: int
    expected: float      # exact zeros chance explains for this dtype and size
    p_value: float       # Poisson tail probability of `zeros` given `expected`
    pattern: ZeroPattern

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["pattern"] = self.pattern.to_dict()
        return d


def layer_zero_test(name: str, w: torch.Tensor, *, alpha: float = CHANCE_ALPHA) -> PrunedLayer | None:
    """PrunedLayer when `w`'s exact zeros are more than chance explains, else None. A matrix
    that is zero everywhere is not a pruning mask (zero-initialised or unused) and gives None."""
    zeros = int((w == 0).sum())
    if zeros < MIN_ZEROS or zeros == w.numel():
        return None
    expected = chance_zeros(w)
    p = poisson_tail(zeros, expected)
    if p >= alpha:
        return None
    return PrunedLayer(name, tuple(w.shape), str(w.dtype).replace("torch.", ""), zeros,
                       round(expected, 6), p, zero_pattern(w, name))


def guess_method(layers: list[PrunedLayer]) -> str:
    """The unlearning method a release's pruned layers look like, from their names and patterns:
    "neurons" (whole rows), "cad" (entry-level zeros in both feed-forward linears),
    "conceptprune" (entry-level zeros, column-clustered), "mixed", "unknown", or "" (none)."""
    if not layers:
        return ""
    kinds = {l.pattern.method for l in layers}
    ff_in = [l for l in layers if l.name.endswith("ff.net.0.proj.weight") and l.pattern.kind == "entries"]
    ff_out = [l for l in layers if l.name.endswith("ff.net.2.weight") and l.pattern.kind == "entries"]
    if ff_in and ff_out and all(l.pattern.method == "cad" for l in ff_in + ff_out):
        return "cad"
    if len(kinds) == 1:
        return kinds.pop()
    votes: dict[str, int] = {}
    for l in layers:
        votes[l.pattern.method] = votes.get(l.pattern.method, 0) + 1
    best = max(votes.items(), key=lambda kv: kv[1])
    return best[0] if best[1] >= 0.8 * len(layers) else "mixed"


def pruned_layers_table(found: list[PrunedLayer]) -> str:
    """Table of found pruned layers: zeros vs chance, how they cluster, the method they look like."""
    rows = [("layer", "shape", "dtype", "zeros", "by chance", "pattern", "looks like")]
    for p in found:
        rows.append((p.name, "x".join(map(str, p.shape)), p.dtype, str(p.zeros), f"{p.expected:.2g}",
                     p.pattern.describe(), p.pattern.method))
    return _format_table(rows)
