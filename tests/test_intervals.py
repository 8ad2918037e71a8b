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
