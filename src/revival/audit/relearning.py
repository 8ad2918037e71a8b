"""The relearning evidence of an audit: each budget (K real images of the concept, S steps)
relearned on the release and on the never-learned model, `relearn_draws` times, each draw with its
own images and seed, pooled image for image (`revival.audit.result.PooledEvidence`).

    relearning_plan(config, ...)   the budgets and each draw's images, read before any work
    relearner(pipe, concept, ...)  relearn(state, budget, draw): the attacker on draw's images
    relearning_states(...)         the relearned states, a budget and a draw at a time
    gather_relearning(...)         their evidence into the audit's result and models
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch

from revival.attack.attackers.relearn import (RELEARN_BUDGETS, RelearnBudget, RelearnConfig, relearn_images,
                                              relearn_state)
from revival.audit.calibrate import relearn_keys
from revival.audit.result import Evaluations, PooledEvidence
from revival.errors import RevivalError


def relearning_plan(config, testbed: bool, concept: str, folder, nl_path):
    """(config with its relearning budgets, the relearning images of each draw or None): the
    images are read and counted before any work, so a budget larger than they are is refused at
    once. Draw d reads its images with seed attack.seed + d (another pick of the test split, or of
    the folder's images)."""
    if config.threat == "weights" and not config.relearn_budgets:
        if folder is not None:
            raise RevivalError("--relearn-images is for the relearning attacker: add --threat relearn or both.")
        return config, None
    budgets = config.relearn_budgets or tuple((b.images, b.steps) for b in RELEARN_BUDGETS)
    if not testbed and folder is None:
        raise RevivalError("the relearning attacker on Stable Diffusion needs --relearn-images DIR (real images of "
                           "the concept, none of them used by unlearning or evaluation).")
    k = max(k for k, _ in budgets)
    images = [relearn_images(testbed, concept, k, folder, seed=config.attack.seed + d) for d in range(config.relearn_draws)]
    return replace(config, relearn_budgets=budgets), images


def relearner(pipe, concept: str, images, config):
    """relearn(state, budget, draw=0): the relearning attacker on the first K of draw's images
    (`images`: exactly one image set per draw, config.relearn_draws of them), with seed
    attack.seed + draw. A draw without its own images is refused: reusing another draw's images
    would pool the same evidence twice."""
    if not isinstance(images, (list, tuple)) or len(images) != config.relearn_draws:
        got = len(images) if isinstance(images, (list, tuple)) else "one tensor"
        raise RevivalError(f"the relearning attacker needs one image set per draw: {config.relearn_draws} "
                           f"draws, got {got}.")
    per_draw = list(images)

    def relearn(state, budget, draw: int = 0):
        if not 0 <= draw < len(per_draw):
            raise RevivalError(f"relearning draw {draw} is outside the {len(per_draw)} draws this audit planned.")
        return relearn_state(pipe, state, concept, budget, RelearnConfig(seed=config.attack.seed + draw),
                             images=per_draw[draw][: budget.images])

    relearn.source = "Fashion-MNIST's test split" if not hasattr(pipe, "pipe") else "the --relearn-images folder"
    return relearn


def relearning_states(release: Mapping[str, torch.Tensor], never_learned: Mapping[str, torch.Tensor] | None,
                      budgets: Sequence, relearn: Callable[..., Mapping],
                      log: Callable[[str], None] = lambda m: None, draws: int = 1):
    """Yield (budget, draw, {key: relearned state}) per budget and draw: the release and the
    never-learned model relearned with the same images, steps and seed (`relearn(state, budget,
    draw)`: draw d picks its own images and noise), one draw at a time so that only its two states
    are held. An error is yielded as the budget's reason, and the budget's later draws are skipped."""
    for b in budgets:
        k_rel, k_nl = relearn_keys(b.images, b.steps)
        log(f"relearning K={b.images}, {b.steps} steps" + (f", {draws} draws" if draws > 1 else ""))
        for d in range(draws):
            try:
                out = {k_rel: relearn(release, b, d)}
                if never_learned is not None:
                    out[k_nl] = relearn(never_learned, b, d)
            except Exception as exc:   # a budget that cannot run leaves its point without evidence
                yield b, d, f"{type(exc).__name__}: {exc}"
                break
            yield b, d, out


def gather_relearning(release, never_learned, path, relearn, config, result, models: dict, evals: Evaluations,
                      log: Callable[[str], None] = lambda m: None) -> None:
    """The relearning curve: each budget on the release and on the never-learned model, each
    `config.relearn_draws` times (pooled: `PooledEvidence`)."""
    result.relearn = {"never_learned": path, "budgets": [], "images_from": getattr(relearn, "source", None),
                      "draws": config.relearn_draws}
    pools: dict[tuple[int, int], dict[str, list]] = {}
    points: dict[tuple[int, int], dict] = {}
    for b, _, got in relearning_states(release, never_learned, [RelearnBudget(*b) for b in config.relearn_budgets],
                                       relearn, log, config.relearn_draws):
        point = points.setdefault((b.images, b.steps), {"images": b.images, "steps": b.steps, "status": "ran",
                                                         "reason": None})
        if isinstance(got, str):
            point.update(status="errored", reason=got)
            pools.pop((b.images, b.steps), None)
            continue
        for key, state in got.items():
            pools.setdefault((b.images, b.steps), {}).setdefault(key, []).append(evals.evidence(state))
    for budget, point in points.items():
        if point["status"] == "ran":
            for key, parts in pools.get(budget, {}).items():
                models[key] = parts[0] if len(parts) == 1 else PooledEvidence(parts)
        result.relearn["budgets"].append(point)
