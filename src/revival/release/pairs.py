"""The two linears of the same hidden units, by name (one lookup for the attack, the defense and
the audit).

A feed-forward block has an input linear (one row per hidden unit; two for a GEGLU projection)
and an output linear (one column per hidden unit). Pairs known by name: diffusers UNet
``ff.net.0.proj`` -> ``ff.net.2``; CLIP ``mlp.fc1`` -> ``mlp.fc2``; BERT-style
``intermediate.dense`` -> ``output.dense`` (not ``attention.output.dense``); the attention value
chain ``to_v`` -> ``to_out.0``.
"""
from __future__ import annotations

from collections.abc import Mapping

# (input-linear suffix, output-linear suffix)
PAIRS: tuple[tuple[str, str], ...] = (
    ("ff.net.0.proj.weight", "ff.net.2.weight"),
    ("mlp.fc1.weight", "mlp.fc2.weight"),
    ("intermediate.dense.weight", "output.dense.weight"),
    ("to_v.weight", "to_out.0.weight"),
)


def partner_name(name: str) -> tuple[str, bool] | None:
    """(the other linear's name, whether `name` is the pair's input linear), or None for a name no
    pair knows. The suffix must start a name component, and a BERT prefix must not end like
    ``attention.`` (``attention.output.dense`` is no feed-forward output)."""
    for w_in, w_out in PAIRS:
        for own, other, is_in in ((w_in, w_out, True), (w_out, w_in, False)):
            if name.endswith(own):
                prefix = name[: -len(own)]
                if prefix.endswith("attention.") or (prefix and not prefix.endswith(".")):
                    continue
                return prefix + other, is_in
    return None


def present_partner(name: str, tensors: Mapping) -> tuple[str, bool] | None:
    """`partner_name(name)` when that partner is in `tensors`, else None."""
    p = partner_name(name)
    return p if p is not None and p[0] in tensors else None
