import math

import pytest
import torch

from revival.errors import RevivalError
from revival.attack.recovery import score, score_matrix


def test_score_on_a_hand_made_case():
    o = torch.tensor([[1.0, -2.0, 3.0, 4.0], [5.0, -6.0, 7.0, 0.5]])
    p = o.clone()
    p[0, 0] = p[0, 1] = p[1, 1] = p[1, 2] = 0  # 4 pruned: true values 1, -2, -6, 7
    r = p.clone()
    r[0, 0] = 2.0  # right sign
    r[0, 1] = 1.0  # wrong sign
    r[1, 1] = -6.0  # right sign, exact
    # r[1, 2] stays 0: not kept
    s = score_matrix("L", o, p, r)
    assert (s.pruned, s.kept, s.sign_correct_kept, s.unpruned_changed, s.pruned_vs_original) == (4, 3, 2, 0, 0)
    assert s.kept_fraction == pytest.approx(0.75)
    assert s.sign_acc_kept == pytest.approx(2 / 3)
    assert s.sign_acc_all == pytest.approx(0.5)
    # ||R-O|| over pruned: (1, 3, 0, 7) -> sqrt(59); ||O-P||: (1, 2, 6, 7) -> sqrt(90)
    assert s.rel_error == pytest.approx(math.sqrt(59 / 90))
    # (R-P) = (2, 1, -6, 0), (O-P) = (1, -2, -6, 7): dot 36, norms sqrt(41), sqrt(90)
    assert s.cosine == pytest.approx(36 / math.sqrt(41 * 90))


def test_overall_aggregates_and_counts_changed_unpruned_entries():
    o = {"a": torch.tensor([[1.0, -1.0]]), "b": torch.tensor([[2.0, 3.0, -4.0]])}
    p = {"a": torch.tensor([[0.0, -1.0]]), "b": torch.tensor([[2.0, 0.0, 0.0]])}
    r = {"a": torch.tensor([[5.0, -1.5]]), "b": torch.tensor([[2.0, -1.0, -1.0]])}
    res = score(o, p, r, ["a", "b"])
    t = res.total
    assert (t.pruned, t.kept, t.sign_correct_kept, t.unpruned_changed) == (3, 3, 2, 1)
    d = res.to_dict()
    assert d["overall"]["sign_acc_all"] == pytest.approx(2 / 3, abs=1e-6)
    assert d["layers"][0]["unpruned_changed"] == 1 and d["overall"]["layers"] == 2
    assert "overall" in res.table()


def test_perfect_revival_and_zero_pruned_layer():
    o = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).half()
    p = o.clone()
    p[:, :3] = 0
    s = score_matrix("x", o, p, o)
    assert s.sign_acc_all == 1.0 and s.rel_error == 0.0 and s.cosine == pytest.approx(1.0)
    none = score_matrix("y", o, o, o)
    assert none.pruned == 0 and math.isnan(none.sign_acc_all)
    assert none.to_dict()["sign_acc_all"] is None


def test_mismatches_raise():
    o = torch.ones(2, 3)
    with pytest.raises(RevivalError, match="shape"):
        score_matrix("L", o, torch.ones(3, 2), o)
    with pytest.raises(RevivalError, match="dtype"):
        score_matrix("L", o, o.half(), o)
    with pytest.raises(RevivalError, match="NaN"):
        score_matrix("L", o, o, torch.full((2, 3), float("inf")))
    with pytest.raises(RevivalError, match="missing"):
        score({"L": o}, {"L": o}, {}, ["L"])
