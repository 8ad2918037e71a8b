"""Gaussian obfuscation: hide the pruned positions of an unlearned model (the paper's defense).

The revival attack reads the pruned positions off the exact zeros. The defense fills every
pruned position with noise N(mean, std) drawn from the statistics of the surviving weights of
the same row (output neuron, ``stats="row"``, the default) or of the whole layer
(``stats="layer"``), so no exact zero is left to find, and strips checkpoint metadata that tells
of pruning. Every unpruned entry stays bit-identical. The paper did not publish its noise
parameters; per-row statistics are the natural choice (PAPER.md) and the per-layer variant is
kept for comparison.

Example::

    >>> updates, result = obfuscate(ckpt.tensors, select_layers(ckpt.tensors), stats="row", seed=0)
    >>> save_checkpoint(ckpt, "safe.safetensors", updates, metadata=strip_pruning_metadata(ckpt.metadata)[0])
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from revival.errors import RevivalError
from revival.release.layers import check_matrices
from revival.defense.base import (DEFENSE_METHODS, STATS, LayerObfuscation, ObfuscateResult, check_scale, check_seed, check_stats,  # noqa: F401
                   layer_generator, obfuscate_matrix, run_secret)

if TYPE_CHECKING:
    from revival.release.masks import MaskReport

_TELLTALE = re.compile(r"prun|mask|revival|revive|sparsit|unlearn|concept|erase", re.IGNORECASE)


def obfuscate(tensors: Mapping[str, torch.Tensor], layers: list[str], stats: str = "row", seed: int | None = None,
              *, progress: bool = False, scale: float = 1.0) -> tuple[dict[str, torch.Tensor], ObfuscateResult]:
    """Gaussian obfuscation of the pruned (exactly zero) positions of `layers`.

    Returns (updates, result): updates maps each layer with pruned positions to its obfuscated
    tensor (same dtype and shape; unpruned entries bit-identical). Each layer's noise comes from
    a torch.Generator seeded by (seed, layer name); seed None (the default): a secret drawn from
    the OS's entropy, so two runs differ; an explicit seed: same seed -> same bytes, reproducible
    by anyone who knows it (`SEED_WARNING`). `scale` multiplies
    the noise's standard deviation (1: the surviving weights' own).
    Raises RevivalError for a bad `stats`/`seed`, a missing or non-2-D layer, or NaN/inf weights.
    """
    check_stats(stats)
    check_seed(seed)
    check_scale(scale)
    result = ObfuscateResult(stats=stats, seed=seed, scale=float(scale))
    base = run_secret(seed)
    check_matrices(tensors, layers, "the defense")
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="obfuscate", unit="layer")
    for name in it:
        w = tensors[name]
        out, info = obfuscate_matrix(w, stats, layer_generator(base, name), scale)
        info.name = name
        result.layers.append(info)
        if info.pruned:
            updates[name] = out
    result.seconds = time.perf_counter() - start
    return updates, result


def strip_pruning_metadata(metadata: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(metadata without entries whose key or value tells of pruning/masks/unlearning, removed keys)."""
    kept, removed = {}, []
    for k, v in metadata.items():
        if _TELLTALE.search(k) or _TELLTALE.search(str(v)):
            removed.append(k)
        else:
            kept[k] = v
    return kept, removed


def defend(path, out, *, layers: str | None = None, stats: str = "row", seed: int | None = None,
           progress: bool = False, method: str | None = None, scale: float = 1.0, report=None,
           overwrite: bool = False, **options) -> tuple[Path, object, "MaskReport"]:
    """Load a pruned checkpoint, defend its target layers with `method` (`revival.defense.DEFENSES`;
    None: the default, resample), strip telltale metadata, write `out` in the same format and its
    JSON report (`report`; by default beside the output, never inside it: the output holds the
    model's own files only). seed None (the default): secret randomness, recorded as null; an
    explicit seed is for research runs (`SEED_WARNING`). Returns (output path, the defense's
    result, MaskReport of the input).

    Raises RevivalError when the target layers hold no exact zero (nothing to hide), or for an
    output/report that would replace an input or (without `overwrite`) an existing file.
    """
    from revival.io import load_checkpoint, plan_outputs, save_checkpoint, write_report
    from revival.release.layers import check_finite, target_layers
    from revival.release.masks import mask_report
    from revival.defense import DEFAULT_DEFENSE, apply_defense, check_options, defense_reads

    t0 = time.perf_counter()
    method = method or DEFAULT_DEFENSE
    check_options(method, options)  # refuse an unknown method, or an option it lacks, before reading anything
    check_scale(scale)
    check_stats(stats)
    check_seed(seed)
    ckpt = load_checkpoint(path)
    out, report_path = plan_outputs(ckpt, out, report, overwrite=overwrite)
    names = target_layers(ckpt.tensors, layers)  # default: every layer found pruned by its zeros
    check_finite(ckpt.tensors, names, str(ckpt.path))
    masks = mask_report(ckpt.tensors, names)
    if masks.pruned == 0:
        raise RevivalError(f"{ckpt.path} has no pruned (exactly zero) weights in its {len(names)} target "
                           "layer(s); there is nothing to obfuscate.")
    # the layers, and the other tensors the defense reads beside them (resample: the blocks' unit tensors)
    extra = defense_reads(method, ckpt.tensors, names)
    tensors = ckpt.tensors if extra is None else {n: ckpt.tensors[n] for n in dict.fromkeys((*names, *extra))}
    updates, result = apply_defense(tensors, names, method, seed, scale=scale, stats=stats, progress=progress,
                                    **options)
    clean, removed = strip_pruning_metadata(ckpt.metadata)
    result.metadata_removed = removed
    written = save_checkpoint(ckpt, out, updates, metadata=clean if removed else None, overwrite=overwrite)
    data = {"input": str(ckpt.path), "output": str(written), "format": ckpt.format, "naming": ckpt.naming,
            "mask": masks.to_dict(), "defense": result.to_dict(), "seconds": round(time.perf_counter() - t0, 4)}
    result.report = write_report(report_path, data, ckpt.input_paths())
    return written, result, masks


@DEFENSE_METHODS.register("gaussian", "fill only the pruned positions with N(mean, std) of their row or layer: the paper's",
                          rank=1)
def gaussian(tensors, layers, seed=None, *, scale=1.0, stats="row", progress=False):
    """`obfuscate` in the defenses' common signature."""
    return obfuscate(tensors, layers, stats, seed, progress=progress, scale=scale)
