"""`robust`: erase a concept so that it holds like a model that never learned it.

Pruning and fine-tuning erasures leave the concept's roots in the weights: the weights stay
close to the original's, and a few images bring the concept back (relearning) or a weight-only
edit reveals it. A model trained without the concept has no such roots. This erasure moves the
release towards that model at a fraction of a retraining's cost, in three steps:

1. **Reset.** Every weight matrix and kernel is mixed with fresh noise of its own scale,
   ``w <- (1 - a) * w + a * std(w) * noise`` (``reset`` = a); norms and biases are kept. What
   the concept left in the weights is buried under noise that no one can subtract: the noise
   comes from the operating system's entropy unless a research run fixes `secret_seed`.
2. **Retrain without the concept.** The model's own denoising objective on the retained
   concepts' real images and captions (the testbed recipe's loss, some captions empty), plus
   the concept's captions mapped to the anchor's images so that prompts for the concept draw
   the anchor; the release is the EMA of the retrained weights. (`distill=True` makes the
   retained rows learn the original's predictions instead of the noise, `cosine=True` decays
   the rate; both are options, not the default.)
3. **Against relearning** (`meta`, on by default). Reset and retraining alone leave the release
   quicker to relearn the concept than a never-learned model (docs/results.md). So, every
   `META_EVERY` steps from the `META_START` share of the steps to the `META_STOP` share, a copy of the
   weights is attacked as the relearning
   attacker would attack the release -- a few AdamW steps on K of the concept's images (K drawn
   from 1, 4, 16) with its captions -- and the gradient of the attacked copy's anchor and
   retained losses is added to the step, scaled by `meta` (first-order meta-learning, as in
   Meta-Unlearning, arXiv 2410.12777, and TAR, arXiv 2408.00761): the release moves towards
   weights that still draw the anchor, and still draw the retained concepts, after relearning.
   The concept's images meet only that simulated attacker: the release never learns from them.
   The last steps (after `META_STOP`) retrain without it: the simulated attacker's gradient costs
   the retained concepts' quality, and those steps win it back while the EMA settles
   (benchmarks/robust_meta.py compares where it stops). `meta=0` turns it off (then the concept's
   images are never read).

After the reset, no weight still points at the original's (a weight-only attacker finds no
zeros, no sparse change and no low-rank residual to read), and the retained concepts are
relearned from their data, as a retrained model learns them (UNDO, arXiv 2506.06278, distils
into a partially noised copy for the same reason; weight noise + retain fine-tuning, arXiv
2505.22310).
"""
from __future__ import annotations

import copy
import math
import secrets

import torch
import torch.nn.functional as F

from revival.model.denoise import finetune
from revival.unlearn.erasures import ERASURES, ErasureConfig, ErasureData

RESET = 0.5           # the share of each weight replaced by noise
ANCHOR_SHARE = 0.125  # share of a step's images that map the concept's captions to the anchor
DISTILL = False       # the retained concepts learn the original's predictions on their own images
EMA = 0.995          # the release is the exponential moving average of the retrained weights
META = 0.1           # weight of the simulated relearning attacker's gradient (0: off)
META_EVERY = 2       # a simulated attack every META_EVERY steps ...
META_START = 0.1     # ... once this share of the steps has passed (the retraining found its feet)
META_STOP = 0.6      # ... until this share of the steps (after it, retraining alone settles the release)
META_STEPS = 5       # the simulated attacker's AdamW steps: the relearning attacker's 20 steps at
META_LR = 1.2e-3     # lr 3e-4 (revival.attack.attackers.relearn) covered in a quarter of the steps
META_IMAGES = (1, 4, 16)   # K, drawn per simulated attack; at most 16 images a step
DEFAULTS = dict(steps=1000, lr=1e-3, batch=64)
SD_DEFAULTS = dict(steps=1000, lr=1e-5, batch=4)   # Stable Diffusion: a small rate for full weights


def reset_weights(unet: torch.nn.Module, share: float, gen: torch.Generator) -> int:
    """Mix every >= 2-D parameter with noise of its own standard deviation; returns how many
    tensors were reset. The noise is drawn on the CPU from `gen` and moved to each weight."""
    n = 0
    with torch.no_grad():
        for _, p in sorted(unet.named_parameters()):
            if p.ndim < 2:
                continue
            noise = torch.randn(p.shape, generator=gen).to(device=p.device, dtype=p.dtype)
            p.mul_(1 - share).add_(noise * (share * float(p.float().std())))
            n += 1
    return n


def warm_cosine(step: int, steps: int, warmup: int = 50, floor: float = 0.05) -> float:
    """The rate's multiplier: a linear warm-up, then a cosine decay to `floor` (the retraining
    settles into a flat region rather than stopping mid-stride)."""
    if step < warmup:
        return (step + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class _Relearner:
    """The simulated relearning attacker of step 3: it attacks a copy of the UNet and returns the
    gradient of the attacked copy's anchor + retained losses (first-order meta-gradient)."""

    def __init__(self, unet, data: ErasureData, gen: torch.Generator):
        self.copy = copy.deepcopy(unet)
        self.names = [n for n, _ in sorted(unet.named_parameters())]
        own = dict(self.copy.named_parameters())
        self.params = [own[n] for n in self.names]
        self.data, self.gen = data, gen

    def gradient(self, params) -> list[torch.Tensor]:
        data, gen, d = self.data, self.gen, self.data.denoiser
        with torch.no_grad():
            for a, p in zip(self.params, params):
                a.copy_(p)
        for a in self.params:
            a.requires_grad_(True)
        k = META_IMAGES[int(torch.randint(len(META_IMAGES), (1,), generator=gen))]
        x_k, _ = data.concept_batch(gen, k)
        opt = torch.optim.AdamW(self.params, lr=META_LR, weight_decay=0.0)
        for _ in range(META_STEPS):
            pick = torch.randint(0, k, (min(k, 16),), generator=gen)
            loss = d.loss(self.copy, x_k[pick.to(x_k.device)], data.concept_batch(gen, len(pick))[1], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            opt.step()
        xa, ca = data.anchor_batch(gen, 16)
        xr, cr = data.retain_batch(gen, 16)
        after = d.loss(self.copy, xa, ca, gen) + d.loss(self.copy, xr, cr, gen)
        grads = torch.autograd.grad(after, self.params)
        for a in self.params:
            a.requires_grad_(False)
        return [g.detach() for g in grads]


@ERASURES.register("robust", "reset every weight towards noise, retrain on the retained concepts against "
                             "simulated relearning; holds like a never-learned model")
def robust(model, data: ErasureData, config: ErasureConfig, log=None, *, reset: float = RESET,
           ema: float = EMA, distill: bool = DISTILL, cosine: bool = False, meta: float = META,
           meta_stop: float = META_STOP) -> dict:
    unet, d = model.unet, data.denoiser
    teacher = copy.deepcopy(unet).requires_grad_(False) if distill else None
    secret = config.secret_seed if config.secret_seed is not None else secrets.randbits(63)
    tensors = reset_weights(unet, reset, torch.Generator().manual_seed(secret))
    gen = torch.Generator().manual_seed(config.seed)
    n_anchor = max(1, round(config.batch * ANCHOR_SHARE))
    n_retain = max(1, config.batch - n_anchor)
    params = [p for _, p in sorted(unet.named_parameters())]
    relearner = _Relearner(unet, data, gen) if meta > 0 else None
    meta_grad: list[list[torch.Tensor]] = []
    start, stop = int(config.steps * META_START), int(config.steps * meta_stop)

    empty = data.denoiser.encode_text([""])[0]

    def loss_at(step: int) -> torch.Tensor:
        xr, cr = data.retain_batch(gen, n_retain)
        xa, ca = data.anchor_batch(gen, n_anchor)
        x0, states = torch.cat([xr, xa]), torch.cat([cr, ca])
        if teacher is None:
            loss = d.loss(unet, x0, states, gen)
        else:
            t, noise = d.draw(len(x0), gen, x0.shape[1:])
            xt = d.noisy(x0, t, noise)
            target = d.target(x0, t, noise)
            # the retained concepts' captioned rows learn the original's prediction; empty captions and
            # the anchor rows learn the noise, so nothing of the original's unconditional prediction
            # (which still draws the concept) is copied
            keep = ~(cr == empty.to(cr.device)).flatten(1).all(1)
            with torch.no_grad():
                if bool(keep.any()):
                    target[:n_retain][keep] = d.predict(teacher, xt[:n_retain][keep], t[:n_retain][keep], cr[keep])
            loss = F.mse_loss(d.predict(unet, xt, t, states), target)
        if relearner is not None and start <= step < stop:
            if (step - start) % META_EVERY == 0:
                meta_grad[:] = [relearner.gradient(params)]
            # a linear term whose gradient is the attacked copy's gradient, scaled by `meta`
            loss = loss + meta * sum((p * g).sum() for p, g in zip(params, meta_grad[0]))
        return loss

    avg = [p.detach().clone() for p in params]

    def average(step: int) -> None:
        d = min(ema, (1 + step) / (10 + step))
        for a, p in zip(avg, params):
            a.lerp_(p.detach(), 1 - d)

    losses = finetune(unet, loss_at, config.steps, config.lr, log=log, after_step=average,
                      schedule=(lambda s: warm_cosine(s, config.steps)) if cosine else None)
    with torch.no_grad():
        for a, p in zip(avg, params):
            p.copy_(a)
    return {"reset": reset, "ema": ema, "distill": distill, "cosine": cosine, "meta": meta,
            "meta_stop": meta_stop,
            "reset_tensors": tensors, "anchor_share": ANCHOR_SHARE,
            "loss_first": round(losses[0], 5), "loss_last": round(sum(losses[-50:]) / len(losses[-50:]), 5)}


robust.defaults = DEFAULTS
robust.sd_defaults = SD_DEFAULTS
