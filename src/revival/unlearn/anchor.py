"""`anchor`: Ablating Concepts (Kumari et al., ICCV 2023, "Ablating Concepts in Text-to-Image
Diffusion Models"), the noise-based variant on every UNet weight.

The concept's captions are taught to draw an anchor's images: for anchor images x0 noised to x_t
and the *concept's* captions c*, the UNet learns the denoising target of the anchor image,

    L = || eps_theta(x_t(anchor x0), c*, t) - eps ||^2 + retain_weight * L_retain,

where L_retain is the model's own denoising loss on the retained concepts with their captions
(`ErasureData.retain_batch`), so that only the concept's prompts move. The paper's model-based
variant would take the frozen model's prediction for the anchor prompt as the target instead;
the noise-based one needs no second copy of the UNet. On a v-prediction model the target is v.

Arguments (`ErasureConfig`): steps (AdamW steps, `revival.model.denoise.finetune`), lr, batch (anchor
images and retain images a step, each), retain_weight, seed (every draw). Shapes: the data's x0
are [N, C, H, W] in the UNet's input space. Example::

    data = testbed_data(Denoiser(model), "sneaker", anchor="sandal")
    report = anchor(model, data, ErasureConfig(steps=400))
"""
from __future__ import annotations

import torch

from revival.model.denoise import finetune
from revival.unlearn.erasures import ERASURES, ErasureConfig, ErasureData

DEFAULTS = dict(steps=400, lr=3e-4, batch=32)  # the testbed's
SD_DEFAULTS = dict(steps=400, lr=2e-6, batch=4)  # Stable Diffusion: a small rate for full weights


@ERASURES.register("anchor", "Ablating Concepts: the concept's captions learn an anchor's images; "
                             "retain data kept")
def anchor(model, data: ErasureData, config: ErasureConfig, log=None) -> dict:
    """Fine-tune every parameter of `model.unet` in place; returns the report's entries."""
    unet, d = model.unet, data.denoiser
    gen = torch.Generator().manual_seed(config.seed)

    def loss_at(step: int) -> torch.Tensor:
        xa, ca = data.anchor_batch(gen, config.batch)
        loss = d.loss(unet, xa, ca, gen)
        if config.retain_weight > 0:
            xr, cr = data.retain_batch(gen, config.batch)
            loss = loss + config.retain_weight * d.loss(unet, xr, cr, gen)
        return loss

    losses = finetune(unet, loss_at, config.steps, config.lr, log=log)
    tail = losses[-50:]
    return {"anchor": data.anchor, "steps": config.steps, "variant": "noise-based, all UNet weights",
            "loss_first": round(losses[0], 5), "loss_last": round(sum(tail) / len(tail), 5)}


anchor.defaults = DEFAULTS
anchor.sd_defaults = SD_DEFAULTS
