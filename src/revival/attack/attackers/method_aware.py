"""The `method-aware` attacker: rerun ConceptPrune's statistics on the release itself.

ConceptPrune picks, per row of every ff.net.2 and per denoising step, the entries with the
largest WANDA score |W| * a_target among the hidden units whose activation norm rose for the
concept (a_target > a_base). The activations a are the input of ff.net.2: they are computed by
layers the release keeps intact, so an attacker who knows the method and the concept's public
prompts can recompute them on the release, almost exactly. The pruned weights' own magnitudes
are hidden (zeroed or filled), but the hidden units they belong to are not.

Score of entry (r, j): max over the first `steps` steps s of
    [a_target[s, j] > a_base[s, j]] * a_target[s, j] * (|w_rj| + mean |w|)
(eligible, concept-active units first; within them, larger entries first). The located count is
the size of ConceptPrune's own mask rerun on the release (`conceptprune_masks`, the method's
public skill ratio and steps); those top-scored entries are completed and revived.
"""
from __future__ import annotations

import torch

from revival.errors import RevivalError
from revival.attack.attackers.base import LOCATORS


def method_scores(w: torch.Tensor, a_target: torch.Tensor, a_base: torch.Tensor, steps: int) -> torch.Tensor:
    """The score above, float32 [out, in]; a_target / a_base: [>= steps, in]."""
    a_t, a_b = a_target[:steps].float(), a_base[:steps].float()
    col = torch.where(a_t > a_b, a_t, torch.zeros_like(a_t)).amax(0)          # [in]
    mag = w.abs().float()
    return col[None, :] * (mag + mag.mean())


@LOCATORS.register("method-aware", "reruns ConceptPrune's statistics on the release for the concept's public prompts", rank=3)
def locate_method_aware(tensors, layers, context):
    """The `method-aware` attacker (`revival.attack.attackers`); needs `context.prompts` and
    `context.activations` (statistics collected on the release)."""
    from revival.unlearn.conceptprune import conceptprune_masks
    from revival.attack.attackers.base import Located, top_fraction

    if context.prompts is None or context.activations is None:
        raise RevivalError("the method-aware attacker needs the model and the concept's prompts "
                           "(it reruns ConceptPrune's activation statistics on the release).")
    target, base = context.prompts
    a_t = context.activations(list(target))
    a_b = context.activations(list(base))
    missing = [n for n in layers if n not in a_t or n not in a_b]
    if missing:
        raise RevivalError(f"no activation statistics for layer {missing[0]!r}: the method-aware attacker "
                           "can only attack layers whose inputs it can hook.")
    # one device for every tensor that meets: the CPU (the statistics may come from a GPU pipeline)
    weights = {n: tensors[n].float().cpu() for n in layers}
    a_t = {n: a_t[n].float().cpu() for n in layers}
    a_b = {n: a_b[n].float().cpu() for n in layers}
    rerun = conceptprune_masks(weights, a_t, a_b, skill_ratio=context.skill_ratio, steps=context.steps)
    masks, scores, counts = {}, {}, {}
    for name in layers:
        s = method_scores(weights[name], a_t[name], a_b[name], context.steps)
        # the located count: the share the attacker was told (the audit: the share the release
        # changed), else the size of ConceptPrune's own mask rerun on the release
        n = int(round(context.fraction * s.numel())) if context.fraction is not None else int(rerun[name].sum())
        scores[name] = s
        masks[name] = top_fraction(s, n / s.numel()) if n else torch.zeros(s.shape, dtype=torch.bool)
        counts[name] = n
    return Located(masks, scores, info={"rerun_mask": sum(counts.values()),
                                        "skill_ratio": context.skill_ratio, "steps": context.steps})
