"""Top-K sign retention."""
import pytest
import torch

from revival.attack.signs import top_k_signs
from revival.errors import RevivalError


def test_keeps_exact_count_of_largest_estimates():
    est = torch.tensor([[0.5, -3.0, 0.1], [2.0, -0.2, 9.0]])
    missing = torch.tensor([[True, True, True], [True, True, False]])  # 9.0 is observed
    kept, signs = top_k_signs(est, missing, keep=0.6)                 # round(0.6 * 5) = 3
    assert kept.sum() == 3
    assert kept.tolist() == [[True, True, False], [True, False, False]]
    assert signs.tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, 0.0]]


def test_confidence_overrides_magnitude_and_keep_one():
    est = torch.tensor([[1.0, -2.0, 3.0]])
    missing = torch.ones(1, 3, dtype=torch.bool)
    conf = torch.tensor([[5.0, 1.0, 0.0]])
    kept, signs = top_k_signs(est, missing, keep=1 / 3, confidence=conf)
    assert kept.tolist() == [[True, False, False]]
    kept, signs = top_k_signs(est, missing, keep=1.0)
    assert kept.all() and signs.tolist() == [[1.0, -1.0, 1.0]]


def test_kept_is_subset_of_missing_on_random_case():
    g = torch.Generator().manual_seed(0)
    est = torch.randn(30, 40, generator=g)
    missing = torch.rand(30, 40, generator=g) < 0.2
    kept, signs = top_k_signs(est, missing, keep=0.6)
    assert not (kept & ~missing).any()
    assert int(kept.sum()) == round(0.6 * int(missing.sum()))
    assert est[kept].abs().min() >= est[missing & ~kept].abs().max()
    assert torch.equal(signs[kept], torch.sign(est[kept]))


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5])
def test_bad_keep(keep):
    with pytest.raises(RevivalError, match="keep"):
        top_k_signs(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), keep=keep)
