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
from dataclasses import asdict, dataclass, field

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import RevivalError
from ..layers import check_matrices
from ..seeding import item_seed

if TYPE_CHECKING:
    from ..masks import MaskReport

STATS = ("row", "layer")
_MAX_REDRAWS = 8
_TELLTALE = re.compile(r"prun|mask|revival|revive|sparsit|unlearn|concept|erase", re.IGNORECASE)


@dataclass
class LayerObfuscation:
    name: str
    shape: list[int]
    pruned: int  # positions filled
    rows_fallback: int  # rows with < 2 surviving weights: used the layer's statistics
    nudged: int  # draws that rounded to exactly 0 in the stored dtype and were redrawn or nudged
    noise_mean: float  # mean of the filled values (float32)
    noise_std: float  # their std
    decoys: int = 0  # decoy zeros set after filling (defense "decoy")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ObfuscateResult:
    stats: str
    seed: int
    scale: float = 1.0
    method: str = "gaussian"
    layers: list[LayerObfuscation] = field(default_factory=list)
    metadata_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None  # where `defend` wrote the JSON report

    @property
    def pruned(self) -> int:
        return sum(layer.pruned for layer in self.layers)

    def to_dict(self) -> dict:
        return {"method": self.method, "stats": self.stats, "seed": self.seed, "scale": self.scale, "layers": [layer.to_dict() for layer in self.layers],
                "metadata_removed": list(self.metadata_removed),
                "totals": {"layers": len(self.layers), "filled": self.pruned,
                           "layers_filled": sum(layer.pruned > 0 for layer in self.layers),
                           "nudged": sum(layer.nudged for layer in self.layers),
                           "seconds": round(self.seconds, 4)}}


def check_scale(scale) -> float:
    import math

    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise RevivalError(f"the noise scale must be a positive number, got {scale!r}.")
    return float(scale)



def obfuscate_matrix(w: torch.Tensor, stats: str = "row", generator: torch.Generator | None = None,
                     scale: float = 1.0) -> tuple[torch.Tensor, LayerObfuscation]:
    """Fill the exact zeros of `w` [out, in] with Gaussian noise N(mean, (scale * std)^2) of the
    surviving weights of the row (or layer); other entries bit-identical."""
    check_scale(scale)
    if stats not in STATS:
        raise RevivalError(f"stats must be one of {', '.join(STATS)}, got {stats!r}.")
    if w.dim() != 2 or not w.is_floating_point():
        raise RevivalError(f"obfuscation needs a 2-D floating-point weight, got shape {list(w.shape)} dtype {w.dtype}.")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    mask = w == 0
    n = int(mask.sum())
    info = LayerObfuscation("", list(w.shape), n, 0, 0, float("nan"), float("nan"))
    if n == 0:
        return w, info
    x = w.double()
    keep = ~mask
    n_keep = keep.sum()
    if int(n_keep) >= 2:
        l_mean = x[keep].mean()
        l_std = x[keep].std()
    else:  # (almost) everything pruned: fall back to a small scale
        l_mean, l_std = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1e-3, dtype=torch.float64)
    if stats == "row":
        cnt = keep.sum(dim=1)
        s1 = (x * keep).sum(dim=1)
        s2 = (x * x * keep).sum(dim=1)
        mean = s1 / cnt.clamp(min=1)
        var = (s2 - cnt * mean * mean) / (cnt - 1).clamp(min=1)
        std = var.clamp(min=0).sqrt()
        weak = cnt < 2
        info.rows_fallback = int((weak & mask.any(dim=1)).sum())
        mean = torch.where(weak, l_mean, mean)
        std = torch.where(weak, l_std, std)
    else:
        mean = l_mean.expand(w.shape[0])
        std = l_std.expand(w.shape[0])
    rows = mask.nonzero()[:, 0]  # row-major order of the pruned positions
    mu, sigma = mean[rows], std[rows]
    sigma = torch.where(sigma > 0, sigma, l_std if float(l_std) > 0 else torch.tensor(1e-3, dtype=torch.float64))
    sigma = sigma * scale
    # noise drawn on the CPU (the same bytes on every device), then moved to the weight's device
    values = (mu + sigma * torch.randn(n, generator=g, dtype=torch.float64).to(mu.device)).to(w.dtype)
    zero = values == 0
    info.nudged = int(zero.sum())
    for _ in range(_MAX_REDRAWS):
        if not bool(zero.any()):
            break
        idx = zero.nonzero()[:, 0]
        redraw = (mu[idx] + sigma[idx] * torch.randn(idx.numel(), generator=g, dtype=torch.float64).to(mu.device)
                  ).to(w.dtype)
        values[idx] = redraw
        zero = values == 0
    if bool(zero.any()):  # astronomically unlikely after redraws: the smallest normal, random sign
        tiny = torch.finfo(w.dtype).tiny
        signs = (torch.randint(0, 2, (int(zero.sum()),), generator=g) * 2 - 1).to(values.device)
        values[zero] = (signs * tiny).to(w.dtype)
    out = w.clone()
    out[mask] = values
    vf = values.float()
    info.noise_mean = float(vf.mean())
    info.noise_std = float(vf.std()) if n > 1 else 0.0
    return out, info


def obfuscate(tensors: Mapping[str, torch.Tensor], layers: list[str], stats: str = "row", seed: int = 0,
              *, progress: bool = False, scale: float = 1.0) -> tuple[dict[str, torch.Tensor], ObfuscateResult]:
    """Gaussian obfuscation of the pruned (exactly zero) positions of `layers`.

    Returns (updates, result): updates maps each layer with pruned positions to its obfuscated
    tensor (same dtype and shape; unpruned entries bit-identical). Each layer's noise comes from
    a torch.Generator seeded by (seed, layer name): same seed -> same bytes. `scale` multiplies
    the noise's standard deviation (1: the surviving weights' own).
    Raises RevivalError for a bad `stats`/`seed`, a missing or non-2-D layer, or NaN/inf weights.
    """
    if stats not in STATS:
        raise RevivalError(f"stats must be one of {', '.join(STATS)}, got {stats!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RevivalError(f"seed must be a non-negative integer, got {seed!r}.")
    check_scale(scale)
    result = ObfuscateResult(stats=stats, seed=seed, scale=float(scale))
    check_matrices(tensors, layers, "the defense")
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="obfuscate", unit="layer")
    for name in it:
        w = tensors[name]
        g = torch.Generator().manual_seed(item_seed(seed, name))
        out, info = obfuscate_matrix(w, stats, g, scale)
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


def defend(path, out, *, layers: str | None = None, stats: str = "row", seed: int = 0,
           progress: bool = False, method: str | None = None, scale: float = 1.0,
           column_share: float | None = None, fresh_units: bool = False,
           hot: str | None = None, retire: bool | None = None, report=None,
           overwrite: bool = False) -> tuple[Path, object, "MaskReport"]:
    """Load a pruned checkpoint, defend its target layers with `method` (`revival.defense.DEFENSES`;
    None: the default, resample), strip telltale metadata, write `out` in the same format and its
    JSON report (`report`, default beside the output as for the attack). Returns (output path,
    the defense's result, MaskReport of the input).

    Raises RevivalError when the target layers hold no exact zero (nothing to hide), or for an
    output/report that would replace an input or (without `overwrite`) an existing file.
    """
    from ..io import load_checkpoint, plan_outputs, save_checkpoint, write_report
    from ..layers import check_finite, target_layers
    from ..masks import mask_report
    from . import DEFAULT_DEFENSE, apply_defense, get_defense

    t0 = time.perf_counter()
    method = method or DEFAULT_DEFENSE
    get_defense(method)  # refuse an unknown method before reading anything
    check_scale(scale)
    if stats not in STATS:
        raise RevivalError(f"stats must be one of {', '.join(STATS)}, got {stats!r}.")
    ckpt = load_checkpoint(path)
    out, report_path = plan_outputs(ckpt, out, report, overwrite=overwrite)
    names = target_layers(ckpt.tensors, layers)  # default: every layer found pruned by its zeros
    check_finite(ckpt.tensors, names, str(ckpt.path))
    masks = mask_report(ckpt.tensors, names)
    if masks.pruned == 0:
        raise RevivalError(f"{ckpt.path} has no pruned (exactly zero) weights in its {len(names)} target "
                           "layer(s); there is nothing to obfuscate.")
    tensors = ckpt.tensors
    if method == "resample":  # the block's input projection (side information, weight and bias) travels along
        from .resample import proj_bias_name, proj_name

        tensors = {n: ckpt.tensors[n] for n in names}
        for n in names:
            for key in (proj_name(n), proj_bias_name(n)):
                if key is not None and key in ckpt.tensors:
                    tensors[key] = ckpt.tensors[key]
    updates, result = apply_defense(tensors, names, method, seed, scale=scale, stats=stats,
                                    column_share=column_share, fresh_units=fresh_units, hot=hot,
                                    retire=retire, progress=progress)
    clean, removed = strip_pruning_metadata(ckpt.metadata)
    result.metadata_removed = removed
    written = save_checkpoint(ckpt, out, updates, metadata=clean if removed else None, overwrite=overwrite)
    data = {"input": str(ckpt.path), "output": str(written), "format": ckpt.format, "naming": ckpt.naming,
            "mask": masks.to_dict(), "defense": result.to_dict(), "seconds": round(time.perf_counter() - t0, 4)}
    result.report = write_report(report_path, data, ckpt.input_paths())
    return written, result, masks
