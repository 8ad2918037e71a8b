import pytest
import torch

from revival.errors import RevivalError
from revival.masks import MaskReport, mask_report, mask_stats, pruned_mask, synthetic_prune_mask


def test_pruned_mask_is_exact_zeros_of_either_sign():
    w = torch.tensor([[0.0, -0.0, 1e-30, -2.0]], dtype=torch.float32)
    assert pruned_mask(w).tolist() == [[True, True, False, False]]
    assert pruned_mask(w.half()).tolist() == [[True, True, True, False]]  # 1e-30 underflows in fp16


def test_stats_on_a_hand_made_matrix():
    w = torch.ones(4, 200)
    w[:, 7] = 0  # one column fully pruned: 4 entries
    w[0, 10:14] = 0  # 4 more in row 0
    s = mask_stats("L", w)
    assert (s.pruned, s.total, s.rows_touched, s.columns_touched) == (8, 800, 4, 5)
    assert s.fraction == pytest.approx(0.01)
    assert (s.max_per_row, s.max_per_column) == (5, 4)
    # top 1% of 200 columns = 2 columns: column 7 (4) + one of 10..13 (1)
    assert s.top1pct_column_share == pytest.approx(5 / 8)
    assert s.top10pct_column_share == pytest.approx(1.0)
    d = s.to_dict()
    assert d["shape"] == [4, 200] and d["pruned"] == 8


def test_report_totals_table_and_require_pruned():
    a = torch.ones(3, 5)
    b = torch.ones(2, 4)
    b[1, 2] = 0
    rep = mask_report({"a": a, "b": b}, ["a", "b"])
    assert isinstance(rep, MaskReport) and rep.pruned == 1 and rep.total == 23
    d = rep.to_dict()
    assert d["totals"] == {"layers": 2, "layers_pruned": 1, "total": 23, "pruned": 1, "fraction": 1 / 23}
    assert "total" in rep.table() and "b" in rep.table()
    assert rep.require_pruned() is rep
    with pytest.raises(RevivalError, match="no pruned"):
        mask_report({"a": a}, ["a"]).require_pruned()


def test_synthetic_mask_is_column_clustered_and_seeded():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(320, 1280, generator=g)
    m = synthetic_prune_mask(w, 0.02, seed=3)
    assert torch.equal(m, synthetic_prune_mask(w, 0.02, seed=3))
    assert not torch.equal(m, synthetic_prune_mask(w, 0.02, seed=4))
    frac = m.float().mean().item()
    assert 0.003 < frac <= 0.02
    s = mask_stats("w", w.masked_fill(m, 0))
    # clustered: far fewer columns touched than a uniform mask of the same size would touch
    assert s.columns_touched < 0.5 * 1280
    assert s.top10pct_column_share > 0.25
    with pytest.raises(RevivalError):
        synthetic_prune_mask(w, 0.0)
