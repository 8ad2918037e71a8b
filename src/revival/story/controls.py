"""What the revival attack's signs are worth: sign recovery against the original weights, and the
controls of `revival demo --controls` (the same kept positions and magnitudes with random,
flipped or the original's signs, and the original's values): if the recovered signs are what
revives, random signs revive nothing and the original's revive as much as the attack."""
from __future__ import annotations

import torch


def sign_recovery(original, unlearned, revived, completed, layers) -> dict:
    """`revival.attack.recovery.score` of the attack: the completion's sign over ALL pruned positions
    (`completed` = the attack with keep 1.0, i.e. before Top-K), over the kept top-K, and kept
    and right over all pruned (unrevived positions count wrong)."""
    import math

    from revival.attack.recovery import score

    res = score(original, unlearned, revived, layers)
    comp = score(original, unlearned, completed, layers).total
    tot = res.total
    fix = lambda v: 0.0 if math.isnan(v) else float(v)  # noqa: E731
    return {"completion": fix(comp.sign_correct_kept / comp.pruned if comp.pruned else math.nan),
            "kept": fix(tot.sign_acc_kept), "all": fix(tot.sign_acc_all), "score": res.to_dict()}


def sign_controls(original: dict, unlearned: dict, revived: dict, layers, seed: int) -> dict[str, dict]:
    """The revived layers with the same kept positions and magnitudes but other signs:
    random (seeded per layer), flipped, the original's; and the original's values at the kept
    positions. {control name: {layer: tensor}}."""
    from revival.runtime.seeding import item_generator

    out: dict[str, dict] = {k: {} for k in ("random_signs", "flipped_signs", "original_signs", "original_values")}
    for name in layers:
        u, r, o = unlearned[name], revived[name], original[name].to(revived[name].device)
        kept = (u == 0) & (r != 0)
        mag = r.abs()
        g = item_generator(seed, "control-random-signs", name)
        rnd = (torch.randint(0, 2, r.shape, generator=g) * 2 - 1).to(device=r.device, dtype=r.dtype)
        osign = torch.where(o < 0, -1.0, 1.0).to(r.dtype)
        out["random_signs"][name] = torch.where(kept, mag * rnd, u)
        out["flipped_signs"][name] = torch.where(kept, -r, u)
        out["original_signs"][name] = torch.where(kept, mag * osign, u)
        out["original_values"][name] = torch.where(kept, o, u)
    return out
