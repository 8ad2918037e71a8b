"""The publisher's least-damage setting: the smallest ConceptPrune skill ratio that erases.

ConceptPrune's masks grow with the skill ratio (per row, the top-k columns by target score; a
larger k holds every smaller one), so the erased concept's accuracy falls, roughly
monotonically, as the ratio grows, and so does the damage to everything else. Given the
activation statistics (collected once: `concept_statistics`) and a function measuring the erased
accuracy of a set of masks on held-out prompts, bisection finds the smallest ratio whose erased
accuracy is at most `target`. Each probe costs one evaluation, not a new statistics run.

    >>> stats = concept_statistics(pipe, target_prompts, base_prompts, config)
    >>> search = least_damage(stats, config, erased_fn, target=0.2)
    >>> search.skill_ratio, search.reached
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch

from revival.errors import RevivalError
from revival.unlearn.conceptprune import ConceptPruneConfig, ConceptStatistics


@dataclass
class LeastDamageResult:
    target: float
    skill_ratio: float            # the chosen ratio (the largest tried when the target is not reached)
    erased: float                 # erased accuracy at that ratio (on the search's prompts)
    reached: bool
    probes: list[dict] = field(default_factory=list)   # [{"skill_ratio", "erased", "pruned"}] in order

    def to_dict(self) -> dict:
        return asdict(self)


def least_damage(stats: ConceptStatistics, config: ConceptPruneConfig,
                 erased_fn: Callable[[dict[str, torch.Tensor]], float], target: float, *,
                 low: float = 0.0, high: float = 0.5, iterations: int = 7,
                 progress: bool | Callable[[str], None] | None = True) -> LeastDamageResult:
    """Bisection over the skill ratio in (low, high]: the smallest probed ratio with
    erased_fn(masks) <= target. `erased_fn` gets the masks (weight key -> bool [out, in]) and
    returns the erased concept's accuracy on prompts/seeds the final evaluation does not use.

    progress: True (default) a progress bar over the probes (at most `iterations`, one
    evaluation each); a function gets one line a probe instead; False/None: silent."""
    if not (isinstance(target, (int, float)) and 0.0 <= target <= 1.0):
        raise RevivalError(f"--target-erasure must be an accuracy in [0, 1], got {target!r}.")
    if not (0.0 <= low < high <= 1.0):
        raise RevivalError(f"the skill-ratio search needs 0 <= low < high <= 1, got {low}, {high}.")
    if not isinstance(iterations, int) or iterations < 1:
        raise RevivalError(f"iterations must be a positive integer, got {iterations!r}.")
    probes: list[dict] = []
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc="least-damage search", unit="probe", leave=False)

    def probe(ratio: float) -> float:
        masks, res = stats.masks(replace(config, skill_ratio=ratio))
        acc = float(erased_fn(masks))
        probes.append({"skill_ratio": round(ratio, 6), "erased": acc, "pruned": res.pruned})
        if bar is not None:
            bar.set_postfix_str(f"ratio {ratio:.4f}: erased {acc:.3f}", refresh=False)
            bar.update(1)
        elif callable(progress):
            progress(f"  skill ratio {ratio:.4f}: erased {acc:.3f} ({res.pruned} weights pruned)")
        return acc

    try:
        acc_high = probe(high)
        if acc_high > target:
            return LeastDamageResult(target, high, acc_high, False, probes)
        best, best_acc = high, acc_high
        lo, hi = low, high
        for _ in range(iterations - 1):
            mid = (lo + hi) / 2
            acc = probe(mid)
            if acc <= target:
                best, best_acc, hi = mid, acc, mid
            else:
                lo = mid
        return LeastDamageResult(target, best, best_acc, True, probes)
    finally:
        if bar is not None:
            bar.close()


SEARCH_FIRST_SEED = 2000  # validation seeds of the search; evaluation's held-out seeds start at 1000
# Validation images of the concept per probe. Bisection keeps the smallest ratio whose probe reads
# <= target, so a noisy probe biases the choice towards ratios that do not erase (the winner's
# curse): with 20 images (+-0.18 at 0.2) held-out evaluation of the chosen ratio landed at
# 0.25-0.50 for most testbed concepts. 60 images (+-0.10) cost about 5 s a probe on one thread.
SEARCH_IMAGES = 60


def search_images(n: int | None) -> int:
    """The search's validation images a probe: `n`, or SEARCH_IMAGES for None; a positive integer."""
    n = SEARCH_IMAGES if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RevivalError(f"--search-images must be a positive integer, got {n!r}.")
    return n
