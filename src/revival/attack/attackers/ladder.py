"""The ladder: every attacker of `attackers.ATTACKERS` (or a chosen few) run against one release,
each run's outcome typed. The audit (`revival.audit.run`) and the strongest attack
(`revival.attack.attackers.strongest`) both climb it; what they measure of each revived state is theirs.

    for o in ladder(release, layers, context, truth=truth):
        o.status        "ran" | "refused" | "errored"
        o.reason        why it refused or errored, or "located nothing (...)"; None when it revived
        o.state(release)  the attacked state (the release itself when it located nothing)
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from revival.errors import RevivalError
from revival.attack.attackers import ATTACKERS, AttackContext, AttackerResult, run_attacker

STATUSES = ("ran", "refused", "errored")


@dataclass
class Outcome:
    """One attacker's run: `status` (STATUSES), `reason` (one field for every why), the attacker's
    result and its updates (only changed tensors; empty when it refused, errored or located
    nothing), and its wall seconds."""

    name: str
    status: str
    reason: str | None = None
    result: AttackerResult | None = None
    updates: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def revived(self) -> bool:
        return self.status == "ran" and bool(self.updates)

    def state(self, release: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor] | None:
        """The attacked release (None unless it ran; the release itself when it located nothing)."""
        if self.status != "ran":
            return None
        return {**release, **self.updates} if self.updates else release

    def to_dict(self) -> dict:
        d = self.result.to_dict() if self.result is not None else {}
        d.pop("attacker", None)
        d.pop("refused", None)
        return {**d, "status": self.status, "reason": self.reason, "seconds": round(self.seconds, 2)}


def run_one(name: str, release: Mapping[str, torch.Tensor], layers: Sequence[str], context: AttackContext,
            truth: Mapping[str, torch.Tensor] | None = None) -> Outcome:
    """One attacker; a refusal (RevivalError) or a crash is recorded in the outcome, never raised:
    the caller decides what a missing attacker means for its verdict."""
    t0 = time.perf_counter()
    try:
        updates, res = run_attacker(name, release, layers, context, truth=truth)
    except Exception as exc:
        kind = "refused" if isinstance(exc, RevivalError) else "errored"
        reason = str(exc) if kind == "refused" else f"{type(exc).__name__}: {exc}"
        return Outcome(name, kind, reason, seconds=time.perf_counter() - t0)
    reason = None if updates else (f"located nothing ({res.refused})" if res.refused else "located nothing")
    return Outcome(name, "ran", reason, res, dict(updates), time.perf_counter() - t0)


def ladder(release: Mapping[str, torch.Tensor], layers: Sequence[str], context: AttackContext, *,
           names: Sequence[str] = ATTACKERS, truth: Mapping[str, torch.Tensor] | None = None) -> Iterator[Outcome]:
    """Each attacker of `names`, in order, as one `Outcome` (lazily: a caller measures each
    revived state before the next attacker runs)."""
    for name in names:
        yield run_one(name, release, layers, context, truth)
