import math

import pytest

from revival.intervals import Proportion, separated, wilson


def test_wilson_known_values():
    # textbook example: 81 of 263 -> (0.2553, 0.3662) at 95%
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_interval_narrows_with_n_and_separation():
    w = [wilson(n // 2, n) for n in (10, 100, 1000)]
    widths = [hi - lo for lo, hi in w]
    assert widths[0] > widths[1] > widths[2]
    assert math.isclose(sum(w[2]) / 2, 0.5, abs_tol=1e-9)
    assert separated(wilson(2, 50), wilson(45, 50))
    assert not separated(wilson(4, 10), wilson(6, 10))
    d = Proportion(3, 12).to_dict()
    assert d["value"] == 0.25 and d["n"] == 12 and d["ci95"][0] < 0.25 < d["ci95"][1]


def test_paired_difference_covers_the_true_difference():
    """Newcombe's paired interval: the point estimate inside, 95% coverage by simulation of
    correlated pairs, narrower than treating the two samples as independent."""
    import random

    from revival.intervals import paired_difference

    first = [True] * 14 + [False] * 6            # 0.70
    second = [True] * 10 + [False] * 10          # 0.50, the same items
    lo, hi = paired_difference(first, second)
    assert lo < 0.20 < hi and -1.0 <= lo and hi <= 1.0
    assert paired_difference([], []) is None
    assert paired_difference([True] * 5, [True] * 5)[0] < 0.0 < paired_difference([True] * 5, [True] * 5)[1]
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])
    # independent intervals (Newcombe's unpaired method 10 would be wider than the paired one)
    w1, w2 = wilson(14, 20), wilson(10, 20)
    unpaired = math.sqrt((0.7 - w1[0]) ** 2 + (w2[1] - 0.5) ** 2) + math.sqrt((w1[1] - 0.7) ** 2 + (0.5 - w2[0]) ** 2)
    assert hi - lo < unpaired
    # coverage: a model at 0.5 and an attacked one at 0.65 (every hit of the first kept), 60 images
    rng = random.Random(0)
    covered = 0
    trials = 1000
    for _ in range(trials):
        base = [rng.random() < 0.5 for _ in range(60)]
        attacked = [b or rng.random() < 0.3 for b in base]
        lo, hi = paired_difference(attacked, base)
        covered += lo <= 0.15 <= hi
    assert 0.92 <= covered / trials <= 0.99
