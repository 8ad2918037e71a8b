"""`esd`: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023), ESD-u.

A frozen copy of the original UNet gives, at a noised concept image x_t, the prediction for the
concept's caption c and for the empty caption; the UNet learns the negatively guided target

    target = eps_frozen(x_t, "") - eta * (eps_frozen(x_t, c) - eps_frozen(x_t, ""))
    L = || eps_theta(x_t, c, t) - target ||^2 + retain_weight * L_retain,

so that prompting for the concept steers away from it. The target's weights sum to one, so the
same formula holds for a v-prediction model's outputs.

Differences from the paper, on purpose:
- x_t is a *noised concept image* (`ErasureData.concept_batch`: Fashion-MNIST's train split on
  the testbed; on Stable Diffusion the original model's own generations of the concept, drawn
  once by `sd_data`), not a partial denoising by the model being trained at every step.
- The retain term (the model's denoising loss on the retained concepts, `retain_batch`) is an
  addition; ESD has none. retain_weight 0 gives the paper's loss.
- Trained parameters: ESD-u's set, every UNet parameter except the cross-attention (`attn2`)
  ones, the paper's choice for erasing a concept from every prompt rather than a word.

Arguments (`ErasureConfig`): steps, lr, batch (concept images and retain images a step, each),
retain_weight, esd_eta (eta), seed (every draw). Example::

    data = testbed_data(Denoiser(model), "sneaker")
    report = esd(model, data, ErasureConfig(steps=400, esd_eta=1.0))
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from revival.model.denoise import finetune
from revival.unlearn.erasures import ERASURES, ErasureConfig, ErasureData

DEFAULTS = dict(steps=400, lr=3e-4, batch=32)    # the testbed's
SD_DEFAULTS = dict(steps=1000, lr=1e-5, batch=1)  # Stable Diffusion: the paper's rate, one image a step


def esd_u_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """ESD-u's trained set: every parameter outside the cross-attention (`attn2`) modules."""
    return [p for name, p in unet.named_parameters() if "attn2" not in name.split(".")]


@ERASURES.register("esd", "ESD-u: the concept's prediction pushed away from it by a frozen copy's "
                          "negative guidance; all but cross-attention trained; retain data kept")
def esd(model, data: ErasureData, config: ErasureConfig, log=None) -> dict:
    """Fine-tune `model.unet` (all but attn2) in place; returns the report's entries."""
    unet, d = model.unet, data.denoiser
    frozen = copy.deepcopy(unet).eval().requires_grad_(False)
    empty = d.encode_text([""])
    gen = torch.Generator().manual_seed(config.seed)
    eta = float(config.esd_eta)

    def loss_at(step: int) -> torch.Tensor:
        x0, c = data.concept_batch(gen, config.batch)
        t, noise = d.draw(len(x0), gen, x0.shape[1:])
        xt = d.noisy(x0, t, noise)
        with torch.no_grad():
            both = d.predict(frozen, torch.cat([xt, xt]), torch.cat([t, t]),
                             torch.cat([c, empty.expand(len(c), -1, -1)]))
            e_c, e_0 = both.chunk(2)
            target = e_0 - eta * (e_c - e_0)
        loss = F.mse_loss(d.predict(unet, xt, t, c), target)
        if config.retain_weight > 0:
            xr, cr = data.retain_batch(gen, config.batch)
            loss = loss + config.retain_weight * d.loss(unet, xr, cr, gen)
        return loss

    params = esd_u_parameters(unet)
    unet.requires_grad_(False)
    try:
        losses = finetune(unet, loss_at, config.steps, config.lr, params=params, log=log)
    finally:
        del frozen
    tail = losses[-50:]
    return {"variant": "ESD-u (every parameter but cross-attention attn2)", "eta": eta, "steps": config.steps,
            "x_t": "noised concept images (testbed: train split; Stable Diffusion: the original's generations)",
            "retain_term": "added (not in ESD)" if config.retain_weight > 0 else "none (as ESD)",
            "trained_parameters": sum(p.numel() for p in params),
            "loss_first": round(losses[0], 5), "loss_last": round(sum(tail) / len(tail), 5)}


esd.defaults = DEFAULTS
esd.sd_defaults = SD_DEFAULTS
