"""The `reprune` attacker: zero the smallest weights, then read the zeros (the authors' rebuttal).

The reference code's last experiment attacks a defended (noise-filled) model whose globally
smallest 2% of weights were set to zero, through those zeros (shared/reference/PAPER.md: the
checkpoint "defense_filled_repruned_via_global_0.02_bottom"). The bet: noise drawn from a row's
statistics often lands near zero, so the smallest weights of a defended matrix are enriched in
filled positions. Here, per target matrix: the `context.share` (default 0.02 here, the authors'
setting, unless the context sets a fraction) smallest |w| of the whole matrix (``mode="global"``)
or of each row (``mode="row"``) are zeroed, together with any exact zeros, and the zero-reading
attack revives them. Score for localisation: -|w| (smaller = more suspect).
"""
from __future__ import annotations

import torch

from revival.errors import RevivalError
from revival.attack.attackers.base import LOCATORS

MODES = ("global", "row")
DEFAULT_SHARE = 0.02


def reprune_mask(w: torch.Tensor, share: float, mode: str = "global") -> torch.Tensor:
    """Bool mask of the `share` smallest |w| of the matrix (global) or of each row (row), plus exact zeros."""
    if mode not in MODES:
        raise RevivalError(f"reprune mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if not 0.0 < share < 1.0:
        raise RevivalError(f"the repruned share must be in (0, 1), got {share}.")
    a = w.abs().float()
    mask = torch.zeros(w.shape, dtype=torch.bool)
    if mode == "global":
        n = max(1, int(round(share * a.numel())))
        mask.view(-1)[torch.argsort(a.flatten(), stable=True)[:n]] = True
    else:
        k = max(1, int(round(share * a.shape[1])))
        mask.scatter_(1, torch.argsort(a, dim=1, stable=True)[:, :k], True)
    return mask | (w == 0).cpu()


@LOCATORS.register("reprune", "zeroes the smallest weights, then reads the zeros", rank=5)
def locate_reprune(tensors, layers, context, mode: str = "global"):
    """The `reprune` attacker (`revival.attack.attackers`)."""
    from revival.attack.attackers.base import Located

    share = context.fraction if context.fraction is not None else DEFAULT_SHARE
    masks, scores = {}, {}
    for name in layers:
        w = tensors[name].cpu()
        masks[name] = reprune_mask(w, share, mode)
        scores[name] = -w.abs().float()
    return Located(masks, scores, info={"share": share, "mode": mode})
