"""What every defense shares: argument checks, the secret randomness, and Gaussian fill of a matrix.

Randomness. A defense's noise is secret by default: `seed=None` draws a run secret from the
operating system's entropy (`secrets`), and each layer's torch.Generator is seeded from (that
secret, the layer's name), so layers differ and nothing of the secret is kept or reported
(`seed: null`). An explicit integer `seed` makes the fills reproducible, byte for byte, for
research runs -- and by anyone who knows it (`SEED_WARNING`): a release must not be defended with
a known seed (the project's replay attacker, `revival.attack.attackers.replay`, regenerates the fills of
small seeds and finds every filled position).
"""
from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from revival.errors import RevivalError
from revival.registry import Registry
from revival.runtime.seeding import item_seed

# The defenses by name: each registers in its own file, `fn(tensors, layers, seed=None, *, scale,
# stats, progress, **its options) -> (updates, result)`; rank orders them (the default first).
DEFENSE_METHODS = Registry("defense method")

STATS = ("row", "layer")
_MAX_REDRAWS = 8

SEED_WARNING = ("a known seed makes the defense's fills reproducible by anyone who knows it (an attacker "
                "regenerates them and finds every filled position); leave --seed out for a release.")


def check_seed(seed) -> int | None:
    """None (secret randomness) or a non-negative integer; RevivalError otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RevivalError(f"seed must be a non-negative integer (or left out for secret randomness), got {seed!r}.")
    return seed


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise RevivalError(f"the noise scale must be a positive number, got {scale!r}.")
    return float(scale)


def check_stats(stats) -> str:
    if stats not in STATS:
        raise RevivalError(f"stats must be one of {', '.join(STATS)}, got {stats!r}.")
    return stats


def run_secret(seed: int | None) -> int:
    """The run's base seed: `seed` itself, or (None) 63 bits of fresh OS entropy, never reported."""
    return seed if seed is not None else secrets.randbits(63)


def layer_generator(base: int, name: str) -> torch.Generator:
    """The CPU generator of layer `name` for the run's base seed (`run_secret`): layers differ, and
    an explicit seed gives the same stream as before (item_seed(seed, name))."""
    return torch.Generator().manual_seed(item_seed(base, name))


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
    seed: int | None  # None: secret randomness (the drawn entropy is never recorded)
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
        return {"method": self.method, "stats": self.stats, "seed": self.seed, "scale": self.scale,
                "layers": [layer.to_dict() for layer in self.layers],
                "metadata_removed": list(self.metadata_removed),
                "totals": {"layers": len(self.layers), "filled": self.pruned,
                           "layers_filled": sum(layer.pruned > 0 for layer in self.layers),
                           "nudged": sum(layer.nudged for layer in self.layers),
                           "seconds": round(self.seconds, 4)}}


def obfuscate_matrix(w: torch.Tensor, stats: str = "row", generator: torch.Generator | None = None,
                     scale: float = 1.0) -> tuple[torch.Tensor, LayerObfuscation]:
    """Fill the exact zeros of `w` [out, in] with Gaussian noise N(mean, (scale * std)^2) of the
    surviving weights of the row (or layer); other entries bit-identical. Without a generator the
    noise is secret (OS entropy). The draw: mean + std x one float64 normal per filled position, in
    row-major order, cast to w's dtype (draws that round to 0 are redrawn)."""
    check_scale(scale)
    check_stats(stats)
    if w.dim() != 2 or not w.is_floating_point():
        raise RevivalError(f"obfuscation needs a 2-D floating-point weight, got shape {list(w.shape)} dtype {w.dtype}.")
    g = generator if generator is not None else torch.Generator().manual_seed(run_secret(None))
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


def smooth_sample(pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` draws (float64) from a smooth density fitted to `pool`: a kernel density estimate
    (Silverman's bandwidth), i.e. a pool value plus Gaussian jitter -- the layer's own shape (its
    peak and tails), but no value copied from the pool (a copy would repeat an existing value)."""
    pool = pool.double().flatten()
    sd = float(pool.std()) if pool.numel() > 1 else 1e-3
    q = pool[:: max(1, pool.numel() // (1 << 20))]
    iqr = float(q.quantile(0.75) - q.quantile(0.25)) if q.numel() > 3 else sd
    h = 0.9 * min(sd, iqr / 1.34 if iqr > 0 else sd) * max(pool.numel(), 2) ** -0.2
    idx = torch.randint(pool.numel(), (n,), generator=generator)
    return pool[idx] + max(h, 1e-12) * torch.randn(n, generator=generator, dtype=torch.float64)
