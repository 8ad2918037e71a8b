"""What every attacker shares: what it knows besides the release (`AttackContext`), its guess
of the hidden positions (`Located`), and the registry the attackers enter by a decorator in
their own file (`LOCATORS`; `attackers.py` imports them in the ladder's order and runs them).

    @LOCATORS.register("residual", "entries that fit the matrix's structure worst")
    def locate_residual(tensors, layers, context) -> Located: ...
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from revival.errors import RevivalError
from revival.registry import Registry
from revival.attack.config import AttackConfig

LOCATORS = Registry("attacker")


@dataclass(frozen=True)
class AttackContext:
    """What an attacker knows besides the release.

    config: the revival attack's settings (completion, keep, magnitude, seed).
    fraction: share of each matrix's entries to locate (None: `skill_ratio`, the method's public
        setting, which is about the share ConceptPrune prunes).
    skill_ratio, steps: ConceptPrune's public settings (method-aware reruns them).
    prompts: (target, base) prompts of the concept (method-aware; ConceptPrune's public ones).
    activations: prompts -> {layer name: activation norms [steps, in]} collected on the
        release (method-aware; see `revival.audit.run.release_activations`).
    """

    config: AttackConfig = AttackConfig()
    fraction: float | None = None
    skill_ratio: float = 0.05
    steps: int = 10
    prompts: tuple[Sequence[str], Sequence[str]] | None = None
    activations: Callable[[Sequence[str]], Mapping[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None and not 0.0 < self.fraction < 0.5:
            raise RevivalError(f"the located fraction must be in (0, 0.5), got {self.fraction!r}.")
        if not 0.0 < self.skill_ratio <= 1.0:
            raise RevivalError(f"skill_ratio must be in (0, 1], got {self.skill_ratio!r}.")

    @property
    def share(self) -> float:
        return self.fraction if self.fraction is not None else min(0.49, self.skill_ratio)


@dataclass
class Located:
    """An attacker's guess. masks: bool [out, in] per layer (the entries it will revive);
    scores: float [out, in] per layer, higher = more suspect (for localisation quality);
    estimates: optional per-layer completions the attacker made itself (else `revive` completes);
    info: facts worth reporting."""

    masks: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    estimates: dict[str, torch.Tensor] | None = None
    column_scores: dict[str, torch.Tensor] | None = None
    info: dict = field(default_factory=dict)


def top_fraction(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the `fraction` top-scored entries of `score` (ties by position)."""
    n = max(1, int(round(fraction * score.numel())))
    order = torch.argsort(score.flatten().float(), descending=True, stable=True)[:n]
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view(score.shape)
