"""The strongest attack on a release: every attacker of the ladder (`revival.attack.attackers`),
each revived model measured, the one that revives most kept -- the "defended + attack" stage of
`revival demo`, the "obfuscated + attack" cell of `revival experiment` and eval-unlearn's
defended-and-attacked technique."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping

import torch

from revival.attack.attackers.activations import release_activations
from revival.attack.attackers import AttackContext
from revival.attack.attackers.ladder import ladder
from revival.attack.config import AttackConfig
from revival.attack.attackers.truth import changed_share, true_mask
from revival.release.layers import audit_layers


def strongest_attack(pipeline, release: Mapping[str, torch.Tensor], original: Mapping[str, torch.Tensor], *,
                     prompts, attack: AttackConfig, skill_ratio: float, steps: int,
                     measure: Callable[[Mapping[str, torch.Tensor]], tuple[float, float]],
                     inference_steps: int | None = None, guidance: float | None = None, halves: str = "both",
                     progress: bool = False):
    """Every attacker against `release` in the audit's scope, each revived state measured by
    `measure(state) -> (erased, preserved)` (preserved nan: not measured; the erased accuracy ranks). `original`: the model's own weights before
    unlearning; the attacked layers are those the release changed or is found pruned in and the
    other linear of their hidden units (`revival.release.layers.audit_layers`), each attacker told the
    share of entries changed there and its localisation scored against them. An attacker that
    finds nothing ran and says so in its reason; one that refuses or crashes is recorded as
    such (`revival.attack.attackers.ladder.Outcome`), never raised.

    Returns (the strongest state -- the release itself when no attacker revived anything --, its
    measurement or None, {"attackers": {name: facts}, "strongest": name or None})."""
    layers = audit_layers(original, release)
    truth = true_mask(original, release, layers)
    fraction = changed_share(truth)
    ctx = AttackContext(config=attack, fraction=fraction, skill_ratio=min(1.0, skill_ratio), steps=steps,
                        prompts=prompts,
                        activations=release_activations(pipeline, release, steps, attack.seed, inference_steps,
                                                        guidance, halves=halves, layers=layers))
    facts, best = {}, (None, release, None)
    for o in ladder(release, layers, ctx, truth=truth):
        facts[o.name] = o.to_dict()
        if not o.revived:
            _log(progress, f"  {o.name:<13} {o.status}: {o.reason}")
            continue
        state = o.state(release)
        measured = measure(state)
        facts[o.name].update(erased=measured[0], preserved=measured[1])
        loc = facts[o.name].get("localisation") or {}
        kept = "" if math.isnan(measured[1]) else f"  preserved {measured[1]:.3f}"   # nan: not measured
        _log(progress, f"  {o.name:<13} erased {measured[0]:.3f}{kept}  (located "
                       f"{facts[o.name].get('located', 0)}, entry AUC {loc.get('entry_auc', float('nan')):.2f})")
        if best[0] is None or measured[0] > best[2][0]:
            best = (o.name, state, measured)
    return best[1], best[2], {"attackers": facts, "strongest": best[0]}


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
