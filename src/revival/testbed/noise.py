"""Images that show no item: what a judge of the testbed must be able to call "no item".

Two families, both [N,1,16,16] in [0,1]:

* synthetic noise of named kinds (`noise_images`). TRAIN_KINDS are what the testbed classifier's
  "no item" class is trained on; HELD_OUT_KINDS are never trained on and only measure how the
  rejection carries over to noise of another kind;
* broken models' outputs (`broken_outputs`): the testbed pipeline with a UNet that cannot draw --
  random weights, every `ff.net.2` or every `ff.net.0.proj` zeroed in bulk -- on the three tasks'
  prompts. Training draws use BROKEN_FIRST_SEED onwards and initialisation seeds
  TRAIN_INIT_SEEDS: disjoint from the evaluation seeds (1000...), the least-damage search's
  (2000...) and the initialisation seeds of the tests and measurements (HELD_OUT_INIT_SEEDS).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from revival.errors import RevivalError
from revival.testbed import text as T
from revival.testbed import transforms as X

TRAIN_KINDS = ("uniform", "gaussian", "binary", "hstripes", "vstripes", "gratings", "constant", "smooth")
HELD_OUT_KINDS = ("checker", "blocks", "sparse", "blurred", "gradient", "rings", "spots", "scribble")
BROKEN_KINDS = ("random-unet", "zero-ff2", "zero-ff0")
BROKEN_FIRST_SEED = 100_000
TRAIN_INIT_SEEDS = (101, 102, 103)
HELD_OUT_INIT_SEEDS = (7, 8)
SIZE = 16


def _u(n: int, gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=gen)


def noise_images(kind: str, n: int, gen: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """`n` images of one noise kind (TRAIN_KINDS or HELD_OUT_KINDS), drawn from `gen`."""
    shape = (n, 1, size, size)
    if kind == "uniform":
        x = torch.rand(shape, generator=gen)
    elif kind == "gaussian":
        x = _u(n, gen, 0.2, 0.8) + _u(n, gen, 0.1, 0.45) * torch.randn(shape, generator=gen)
    elif kind == "binary":
        x = (torch.rand(shape, generator=gen) < _u(n, gen, 0.2, 0.8)).float()
    elif kind == "hstripes":   # rows of noise, every second row dimmed or the rows constant
        rows = torch.rand(n, 1, size, 1, generator=gen)
        pix = torch.rand(shape, generator=gen)
        mix = _u(n, gen)
        x = mix * rows.expand(shape) + (1 - mix) * pix
        dim = torch.where(torch.arange(size) % 2 == 0, 1.0, 0.15).view(1, 1, -1, 1)
        x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, x * dim, x)
    elif kind == "constant":
        x = _u(n, gen).expand(shape).clone()
    elif kind == "smooth":     # 2x2 to 8x8 noise, bilinear-upsampled: blobs of several sizes
        k = [2, 3, 4, 6, 8][int(torch.randint(0, 5, (1,), generator=gen))]
        x = F.interpolate(torch.rand(n, 1, k, k, generator=gen), size=(size, size), mode="bilinear",
                          align_corners=False)
    elif kind == "vstripes":
        x = torch.rand(n, 1, 1, size, generator=gen).expand(shape).clone()
    elif kind == "checker":
        i = torch.arange(size)
        period = torch.randint(1, 4, (n, 1, 1, 1), generator=gen)
        x = (((i.view(1, 1, -1, 1) // period) + (i.view(1, 1, 1, -1) // period)) % 2).float()
        x = x * _u(n, gen, 0.5, 1.0)
    elif kind == "blocks":     # 4x4 noise, nearest-upsampled
        x = F.interpolate(torch.rand(n, 1, 4, 4, generator=gen), size=(size, size), mode="nearest")
    elif kind == "sparse":     # salt on black
        x = (torch.rand(shape, generator=gen) < _u(n, gen, 0.03, 0.2)).float()
    elif kind == "blurred":
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = (k[:, None] * k[None, :] / 256).view(1, 1, 5, 5)
        x = F.conv2d(torch.rand(shape, generator=gen), k, padding=2)
        x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True) + 1e-6)
    elif kind == "gradient":
        t = torch.linspace(0, 1, size)
        ang = _u(n, gen, 0, 6.2832)
        x = (ang.cos() * t.view(1, 1, -1, 1) + ang.sin() * t.view(1, 1, 1, -1))
        x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True) + 1e-6)
    elif kind == "gratings":   # straight waves (sine or square) at a random angle and period
        i = torch.arange(size, dtype=torch.float32)
        ang, per = _u(n, gen, 0, 3.1416), _u(n, gen, 2, 8)
        t = ang.cos() * i.view(1, 1, -1, 1) + ang.sin() * i.view(1, 1, 1, -1)
        wave = 0.5 + 0.5 * torch.sin(2 * 3.1416 * t / per + _u(n, gen, 0, 6.2832))
        x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, (wave > 0.5).float(), wave)
        x = x * _u(n, gen, 0.5, 1.0) + 0.3 * _u(n, gen) * torch.rand(shape, generator=gen)
    elif kind == "spots":      # a few bright Gaussian blobs on black
        i = torch.arange(size, dtype=torch.float32)
        x = torch.zeros(shape)
        for _ in range(4):
            cy, cx, r = _u(n, gen, 0, size), _u(n, gen, 0, size), _u(n, gen, 0.8, 2.5)
            x = x + torch.exp(-((i.view(1, 1, -1, 1) - cy) ** 2 + (i.view(1, 1, 1, -1) - cx) ** 2) / (2 * r * r))
    elif kind == "scribble":   # a random walk of bright pixels
        x = torch.zeros(shape)
        pos = torch.randint(0, size, (n, 2), generator=gen)
        for _ in range(60):
            x[torch.arange(n), 0, pos[:, 0], pos[:, 1]] = 1.0
            pos = (pos + torch.randint(-1, 2, (n, 2), generator=gen)).clamp(0, size - 1)
    elif kind == "rings":      # concentric rings about a random centre
        i = torch.arange(size, dtype=torch.float32)
        c = _u(n, gen, 3, size - 3), _u(n, gen, 3, size - 3)
        r = ((i.view(1, 1, -1, 1) - c[0]) ** 2 + (i.view(1, 1, 1, -1) - c[1]) ** 2).sqrt()
        x = 0.5 + 0.5 * torch.cos(r * _u(n, gen, 0.8, 2.0))
    else:
        raise RevivalError(f"unknown noise kind {kind!r}; known: {', '.join(TRAIN_KINDS + HELD_OUT_KINDS)}.")
    return x.clamp(0, 1)


def task_prompts() -> list[str]:
    """Every prompt kind of the three tasks (plain, each style, tagged) for every item."""
    return ([T.default_prompt(c) for c in T.CLASSES]
            + [T.style_prompt(c, s) for s in X.STYLES for c in T.CLASSES]
            + [T.attribute_prompt(c, X.ATTRIBUTE) for c in T.CLASSES])


def broken_state(kind: str, state: dict[str, torch.Tensor], init_seed: int) -> dict[str, torch.Tensor]:
    """A UNet state that cannot draw: `random-unet` (a fresh initialisation from `init_seed`),
    `zero-ff2` / `zero-ff0` (`state` with every ff.net.2 / ff.net.0.proj weight zeroed)."""
    if kind == "random-unet":
        from revival.testbed.model import build_unet

        with torch.random.fork_rng(devices=[]):   # the caller's random stream is left as it was
            torch.manual_seed(init_seed)
            return build_unet().state_dict()
    key = {"zero-ff2": "ff.net.2.weight", "zero-ff0": "ff.net.0.proj.weight"}.get(kind)
    if key is None:
        raise RevivalError(f"unknown broken model {kind!r}; known: {', '.join(BROKEN_KINDS)}.")
    return {k: torch.zeros_like(v) if k.endswith(key) else v for k, v in state.items()}


@torch.no_grad()
def broken_outputs(pipe, kind: str, n: int, first_seed: int = BROKEN_FIRST_SEED,
                   init_seed: int = TRAIN_INIT_SEEDS[0]) -> torch.Tensor:
    """`n` images of `pipe` (a TestbedPipeline) with its UNet broken as `kind` says, on the tasks'
    prompts in turn, seeds from `first_seed`. The pipeline's own weights are put back after."""
    prompts = task_prompts()
    before = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    try:
        pipe.unet.load_state_dict(broken_state(kind, before, init_seed))
        return pipe([prompts[i % len(prompts)] for i in range(n)], list(range(first_seed, first_seed + n)))
    finally:
        pipe.unet.load_state_dict(before)
