import pytest
import torch

from revival.errors import RevivalError
from revival.unlearn.conceptprune import ConceptPruneConfig, ConceptStatistics
from revival.unlearn.least_damage import least_damage


def _stats(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {f"l{i}.weight": torch.randn(24, 64, generator=g) for i in range(3)}
    t = {k: torch.rand(4, 64, generator=g) + 0.5 for k in w}
    b = {k: torch.rand(4, 64, generator=g) for k in w}
    return ConceptStatistics(w, t, b, 6, 54)


def test_masks_grow_with_the_ratio_and_bisection_finds_the_least():
    stats, cfg = _stats(), ConceptPruneConfig(skill_ratio=0.05, steps=4)
    sizes = [stats.masks(ConceptPruneConfig(skill_ratio=r, steps=4))[1].pruned for r in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    threshold = stats.masks(ConceptPruneConfig(skill_ratio=0.13, steps=4))[1].pruned

    def erased(masks):  # the concept is gone once at least `threshold` weights are pruned
        return 0.0 if sum(int(m.sum()) for m in masks.values()) >= threshold else 1.0

    res = least_damage(stats, cfg, erased, target=0.2, iterations=9)
    assert res.reached and res.erased == 0.0
    assert 0.11 <= res.skill_ratio <= 0.14  # within the bisection's resolution of the true 0.125..0.13
    assert all(p["erased"] == 1.0 for p in res.probes if p["skill_ratio"] < res.skill_ratio)
    never = least_damage(stats, cfg, lambda m: 1.0, target=0.2, iterations=3)
    assert not never.reached and never.skill_ratio == 0.5 and len(never.probes) == 1
    with pytest.raises(RevivalError, match="target-erasure"):
        least_damage(stats, cfg, erased, target=1.5)
