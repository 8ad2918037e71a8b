"""The paper's attacker: the pruned positions are the exact zeros of the release."""
from __future__ import annotations

from revival.attack.attackers.base import LOCATORS, Located


@LOCATORS.register("zeros", "the paper's: the pruned positions are the exact zeros", rank=0)
def locate_zeros(tensors, layers, context) -> Located:
    masks = {n: (tensors[n] == 0).cpu() for n in layers}
    return Located(masks, {n: m.float() for n, m in masks.items()})
