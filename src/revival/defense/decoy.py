"""Decoy zeros: fill the pruned positions, then prune as many decoy positions elsewhere.

A release without any exact zero tells an attacker that it was defended. The decoy defense
keeps zeros, at the wrong places: the pruned positions are filled (Gaussian obfuscation, row
statistics), then, per layer, as many decoy positions as were pruned are set to zero, clustered
in columns the way ConceptPrune's mask clusters: the column counts of the true mask are moved
to randomly chosen columns that held no pruned entry, and in each decoy column the entries of
smallest |w| are zeroed (small weights, so the release changes little). The zero-reading attack
then revives the decoys (at Neuron-Max magnitudes, damaging unrelated units) and leaves the
concept erased.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from revival.release.layers import check_matrices
from revival.defense.base import DEFENSE_METHODS, ObfuscateResult, check_scale, check_seed, check_stats, layer_generator, obfuscate_matrix, run_secret


def decoy_positions(w: torch.Tensor, pruned: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bool mask [out, in] of decoy positions: the column counts of `pruned`, moved to random
    unpruned columns, each filled with that column's smallest-|w| entries."""
    counts = pruned.sum(0)
    used = counts > 0
    free = (~used).nonzero().squeeze(1)
    src = counts[used]
    decoy = torch.zeros_like(pruned)
    if free.numel() == 0 or src.numel() == 0:
        return decoy
    perm = free[torch.randperm(free.numel(), generator=generator)]
    src = src[torch.randperm(src.numel(), generator=generator)]
    a = w.abs().float()
    for j, c in zip(perm.tolist(), src.tolist()):   # fewer free columns than pruned ones: the rest are dropped
        idx = torch.argsort(a[:, j], stable=True)[:int(c)]
        decoy[idx, j] = True
    return decoy & (w != 0)


@DEFENSE_METHODS.register("decoy", "fill the pruned positions, then zero as many decoys clustered like ConceptPrune's",
                          rank=2)
def decoy(tensors: Mapping[str, torch.Tensor], layers: list[str], seed: int | None = None, *, stats: str = "row",
          scale: float = 1.0, progress: bool = False) -> tuple[dict[str, torch.Tensor], ObfuscateResult]:
    """Fill the pruned positions (Gaussian, `stats`, `scale`), then zero decoys; see module doc.
    Returns (updates, result) like `obfuscate`; result.to_dict() adds the decoy count per layer.
    seed None (the default): secret OS entropy; an explicit seed: reproducible bytes."""
    check_scale(scale)
    check_stats(stats)
    check_seed(seed)
    result = ObfuscateResult(stats=stats, seed=seed, scale=float(scale), method="decoy")
    base = run_secret(seed)
    check_matrices(tensors, layers, "the defense")
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    for name in layers:
        w = tensors[name]
        g = layer_generator(base, name)
        pruned = w == 0
        filled, info = obfuscate_matrix(w, stats, g, scale)
        info.name = name
        d = decoy_positions(filled, pruned, g)
        out = filled.masked_fill(d, 0)
        info.decoys = int(d.sum())
        result.layers.append(info)
        if info.pruned:
            updates[name] = out
    result.seconds = time.perf_counter() - start
    return updates, result
