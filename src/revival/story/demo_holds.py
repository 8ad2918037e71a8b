"""The demo's last act: does an erasure hold like a model that never learned the concept?

Beside the pruning story (erase, revive, defend, attack again), three models are compared:
the never-learned model (the testbed's recipe trained without the concept: the gold standard),
the robust erasure (`revival unlearn --method robust`) and the pruned release; each is then
relearned with the same K real images and S steps (Fashion-MNIST's test split), since relearning
creates the concept in any model and means something only beside the never-learned one.

The never-learned model and the robust release of a concept are the shipped ones
(`revival.audit.never_learned.shipped_never_learned`, `shipped_robust`), so the act costs evaluations
and two short fine-tunes, not a retraining; it is skipped, and says so, for a concept without them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from revival.story.demo_report import HOLD_LABELS, HOLD_STAGES  # noqa: F401 (the demo's names)

RELEARN_BUDGET = (16, 50)


def shipped_robust(concept: str) -> Path | None:
    """The committed robust release of a testbed concept, or None: the `unet.safetensors` (and its
    report beside it) that `revival unlearn --model testbed --concept C --method robust` wrote."""
    from revival.testbed.pipeline import WEIGHTS_DIR

    p = WEIGHTS_DIR / "robust" / concept / "unet.safetensors"
    return p if p.is_file() else None


def _load(path: Path, original: dict) -> dict:
    from revival.io import load_checkpoint

    t = load_checkpoint(path).tensors
    return {k: t[k].to(device=v.device, dtype=v.dtype) if k in t else v for k, v in original.items()}


def holds_act(pipeline, concept: str, original: dict, unlearned: dict, measure: Callable,
              erased_only: Callable[[dict], tuple], log: Callable[[str], None]) -> tuple[dict, dict]:
    """({stage: measured} for the hold stages present, the relearning figures). `measure(state)`
    is the demo's evaluation; `erased_only(state)` -> (erased, ci95) on the concept's images."""
    from revival.attack.attackers.relearn import RelearnBudget, relearn_state
    from revival.audit.never_learned import load_never_learned, shipped_never_learned

    nl_path, rb_path = shipped_never_learned(concept), shipped_robust(concept)
    if nl_path is None or rb_path is None:
        log(f"  no shipped never-learned model or robust release of {concept!r}: this act is skipped")
        return {}, {}
    states = {"never_learned": load_never_learned(nl_path, concept, original), "robust": _load(rb_path, original)}
    measured = {s: measure(st) for s, st in states.items()}
    k, steps = RELEARN_BUDGET
    budget = RelearnBudget(k, steps)
    relearn = {"images": k, "steps": steps, "images_from": "Fashion-MNIST's test split"}
    for name, st in (("never_learned", states["never_learned"]), ("unlearned", unlearned), ("robust", states["robust"])):
        e, ci = erased_only(relearn_state(pipeline, st, concept, budget))
        relearn[name] = {"erased": e, "erased_ci95": ci}
        log(f"  relearned ({k} images, {steps} steps) {name:<14} erased {e:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]")
    return measured, relearn


def grid_rows(measured: dict, concept: str, preserved: str, n: int) -> dict[str, torch.Tensor]:
    """The hold stages' grid rows: n images of the concept, n of the preserved class."""
    return {s: torch.cat([m[5][concept][:n], m[5][preserved][:n]]) for s, m in measured.items()}
