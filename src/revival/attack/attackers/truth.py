"""What the publisher changed: the positions where a release differs from the original, and the
share of entries an attacker is told (the audit's and the strongest attack's)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from revival.errors import RevivalError


def true_mask(original: Mapping[str, torch.Tensor], release: Mapping[str, torch.Tensor],
              layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The positions the publisher changed: where the release differs from the original."""
    out = {}
    for name in layers:
        if name not in original:
            raise RevivalError(f"the original has no layer {name!r}.")
        o, r = original[name], release[name]
        if tuple(o.shape) != tuple(r.shape):
            raise RevivalError(f"layer {name!r} has shape {tuple(o.shape)} in the original but "
                               f"{tuple(r.shape)} in the release.")
        out[name] = (o.to(device=r.device).float() != r.float()).cpu()   # either may live on any device
    return out


def changed_share(truth: Mapping[str, torch.Tensor]) -> float:
    """The share of entries changed in the layers `truth` shows changed (an unchanged layer that is
    attacked too does not dilute it), clipped to what an attacker is told: [1e-4, 0.49]."""
    changed = [t for t in truth.values() if bool(t.any())]
    share = sum(int(t.sum()) for t in changed) / max(1, sum(t.numel() for t in changed))
    return min(0.49, max(1e-4, share))
