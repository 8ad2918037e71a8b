"""The adaptive attacker's locator: entries that do not fit a matrix's structure are found."""
from __future__ import annotations

import pytest
import torch

from revival.attack.attackers.residual import locate, residual_scores
from revival.defense.obfuscate import obfuscate_matrix
from revival.errors import RevivalError
from revival.release.masks import synthetic_prune_mask


def _planted(seed: int = 0, side: bool = False):
    """A structured matrix (low rank, or explained column by column by side vectors), pruned
    with a ConceptPrune-like mask and obfuscated with row-statistics noise."""
    g = torch.Generator().manual_seed(seed)
    m, n = 48, 160
    if side:
        s = torch.randn(2, m, n, generator=g)
        coef = torch.randn(2, n, generator=g)
        w = (s * coef[:, None, :]).sum(0) + 0.05 * torch.randn(m, n, generator=g)
    else:
        s = None
        w = torch.randn(m, 4, generator=g) @ torch.randn(4, n, generator=g) + 0.05 * torch.randn(m, n, generator=g)
    mask = synthetic_prune_mask(w, 0.03, seed=seed)
    filled, _ = obfuscate_matrix(w.masked_fill(mask, 0), "row", torch.Generator().manual_seed(seed))
    return w, s, mask, filled


@pytest.mark.parametrize("use_side", [False, True])
def test_locator_finds_noise_in_structured_matrices(use_side):
    w, side, mask, filled = _planted(1, side=use_side)
    share = float(mask.float().mean())
    found = locate(filled, share, side, rank=0 if use_side else 4)
    assert found.dtype == torch.bool and found.shape == w.shape
    assert int(found.sum()) == int(round(share * w.numel()))
    precision = float((found & mask).sum() / found.sum())
    assert precision > 0.4, precision          # chance would be ~share (0.03); some noise draws
    # land close to the structure's prediction and cannot be told apart
    z = residual_scores(filled, side, rank=0 if use_side else 4).flatten()
    pos, neg = z[mask.flatten()], z[~mask.flatten()]
    assert float((pos[:, None] > neg[None, :]).float().mean()) > 0.9     # AUC
    # on the untouched matrix the same number of guesses finds far fewer pruned positions
    assert float((locate(w, share, side, rank=0 if use_side else 4) & mask).sum() / found.sum()) < precision


def test_residual_scores_low_rank_projection_and_errors():
    w, _, _, _ = _planted(2)
    z = residual_scores(w, rank=4)
    u = torch.linalg.svd(w.double(), full_matrices=False)[0][:, :4]
    r = w.double() - u @ (u.T @ w.double())
    assert torch.allclose(z, (r.abs() / r.abs().median()).float(), atol=1e-4)
    # side features with a zero-width basis and an empty side set agree with the plain fit
    assert torch.allclose(residual_scores(w, torch.zeros(0, *w.shape), rank=4), z)
    with pytest.raises(RevivalError, match="fraction"):
        locate(w, 0.0)
    with pytest.raises(RevivalError, match="side features"):
        residual_scores(w, torch.zeros(1, 3, 3))
    with pytest.raises(RevivalError, match="2-D"):
        residual_scores(w[0])
