"""95% intervals for accuracies: Wilson score intervals for a proportion of hits."""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """hits of n, with its Wilson score interval at confidence z (95% by default)."""

    hits: int
    n: int
    z: float = Z95

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.hits, self.n, self.z)

    def to_dict(self) -> dict:
        ci = self.interval
        return {"value": self.value, "hits": self.hits, "n": self.n,
                "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)]}


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of hits/n (None when n == 0); stays inside [0, 1], sensible at 0 and n."""
    if n <= 0:
        return None
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in [0, n], got {hits} of {n}")
    p = hits / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if hits == 0 else max(0.0, centre - half)
    hi = 1.0 if hits == n else min(1.0, centre + half)
    return lo, hi


def separated(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """True when two intervals do not overlap."""
    return a is not None and b is not None and (a[1] < b[0] or b[1] < a[0])
