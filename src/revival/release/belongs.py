"""Does a release belong to a model? One check for every verb that reads a release beside a model.

A release of a model holds tensors named as the model's UNet's, each of the model's shape. It
may hold only some of them (a pruned layer or two) and, in a single-file (LDM) checkpoint, the
pipeline's other parts too. A release that shares no name with the model, or a tensor of another
shape, is of another architecture: one sentence, before any weight is read (`tensor_meta` reads
only the header of a lazy checkpoint).
"""
from __future__ import annotations

from collections.abc import Mapping

from revival.errors import RevivalError
from revival.io import tensor_meta


def check_belongs(model: Mapping, release: Mapping, where: str = "the release", *,
                  others_allowed: bool = False) -> tuple[list[str], list[str]]:
    """(the names `release` shares with `model`, the names it holds that `model` lacks); a
    RevivalError when it shares none, when a shared tensor's shape differs, or (unless
    `others_allowed`: a single-file pipeline carries its VAE and text encoder) when it holds a
    name the model lacks. Both mappings may be lazy checkpoints."""
    shared = [k for k in release if k in model]
    other = [k for k in release if k not in model]
    if not release:
        raise RevivalError(f"{where} holds no tensors.")
    if not shared:
        raise RevivalError(f"{where} holds none of the model's tensors: it is of another architecture, not a "
                           "release of this model.")
    if other and not others_allowed:
        raise RevivalError(f"{where} has a tensor {other[0]!r} the model's UNet does not have: it does not belong "
                           "to this model.")
    for k in shared:
        mine, theirs = tuple(tensor_meta(model, k)[1]), tuple(tensor_meta(release, k)[1])
        if mine != theirs:
            raise RevivalError(f"{where}'s tensor {k!r} has shape {theirs}, the model's {mine}: it does not "
                               "belong to this model.")
    return shared, other
