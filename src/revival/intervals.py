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


def paired_difference(first: list[bool], second: list[bool], z: float = Z95) -> tuple[float, float] | None:
    """95% interval of p(first) - p(second) when both were measured on the SAME items (an
    attacked model and the release on the same prompts and seeds): Newcombe's hybrid score
    interval for paired proportions (Statistics in Medicine 17, 1998, method 10), built from
    the two Wilson intervals and the correlation of the pairs. None when there are no pairs."""
    if len(first) != len(second):
        raise ValueError(f"paired outcomes need equal lengths, got {len(first)} and {len(second)}")
    n = len(first)
    if n == 0:
        return None
    a = sum(1 for x, y in zip(first, second) if x and y)
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    if den == 0:
        phi = 0.0
    else:
        num = a * d - b * c
        num = max(num - n / 2, 0.0) if num > 0 else num     # Newcombe's continuity correction
        phi = num / math.sqrt(den)
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return max(-1.0, diff - delta), min(1.0, diff + eps)
