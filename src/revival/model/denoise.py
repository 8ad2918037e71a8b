"""The denoising objective on a loaded model's UNet: what the fine-tuning erasures (anchor, ESD,
robust) and the relearning attacker train with, on the testbed and on a local Stable Diffusion.

    d = Denoiser(model)                  # a loaded testbed pipeline or SD generator (revival.model.loader)
    x0 = d.encode_images(images)         # [N, C, H, W] in [0, 1] -> the UNet's input space
    c = d.encode_text(prompts)           # the frozen text encoder's token states
    loss = d.loss(unet, x0, c, gen)      # the training objective at random timesteps
    finetune(unet, lambda step: ..., steps=50, lr=3e-4)

The testbed works in pixels ([-1, 1], one channel, 16x16); SD in VAE latents (scaled by the VAE's
factor). The timesteps and noise of each step come from a CPU generator and are moved to the
UNet's device, so a run depends on its seed only, not on the device it runs on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from revival.errors import RevivalError


class Denoiser:
    """The model's forward process and objective, for `unet` (default: the model's own)."""

    def __init__(self, model):
        self.model = model
        self.unet = model.unet
        self.device = torch.device(model.device)
        pipe = getattr(model, "pipe", None)
        self.sd = pipe is not None
        if self.sd:
            from diffusers import DDPMScheduler

            sched = DDPMScheduler.from_config(pipe.scheduler.config)
            self.vae = pipe.vae
            self.size = int(pipe.unet.config.sample_size) * getattr(pipe, "vae_scale_factor", 8)
        else:
            from revival.testbed.model import train_scheduler

            sched = train_scheduler()
            self.size = int(model.resolution)
        self.timesteps = int(sched.config.num_train_timesteps)
        self.prediction = sched.config.prediction_type
        self.acp = sched.alphas_cumprod.to(torch.float32)

    # ----------------------------------------------------------------- inputs
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        if self.sd:
            pipe = self.model.pipe
            states = pipe.encode_prompt(list(prompts), self.device, 1, False)[0]
        else:
            states = self.model.encode(list(prompts))
        return states.to(device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] floats in [0, 1] -> x0 for the UNet (float32 on its device)."""
        if images.ndim != 4 or images.shape[0] == 0:
            raise RevivalError(f"images must be a non-empty [N, C, H, W] batch, got shape {tuple(images.shape)}.")
        x = images.float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        channels = 3 if self.sd else int(self.unet.config.in_channels)
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1) if channels in (1, 3) else x
        x = x.to(self.device) * 2 - 1
        if not self.sd:
            return x.contiguous()
        vae = self.vae
        out = []
        for i in range(0, len(x), 8):
            lat = vae.encode(x[i:i + 8].to(vae.dtype)).latent_dist.mean
            out.append(lat.float() * float(vae.config.scaling_factor))
        return torch.cat(out)

    # ----------------------------------------------------------------- objective
    def draw(self, n: int, gen: torch.Generator, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps [n], noise [n, *shape]) from the CPU generator, on the UNet's device."""
        t = torch.randint(0, self.timesteps, (n,), generator=gen)
        noise = torch.randn((n, *shape), generator=gen)
        return t.to(self.device), noise.to(self.device)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.acp.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.prediction == "v_prediction":
            a = self.acp.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
            return a.sqrt() * noise - (1 - a).sqrt() * x0
        return noise

    def predict(self, unet, xt: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        return unet(xt.to(dtype), t, encoder_hidden_states=states.to(dtype)).sample.float()

    def loss(self, unet, x0: torch.Tensor, states: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The model's own training loss on (x0, states) at random timesteps and noise."""
        t, noise = self.draw(len(x0), gen, x0.shape[1:])
        return F.mse_loss(self.predict(unet, self.noisy(x0, t, noise), t, states), self.target(x0, t, noise))


def finetune(unet: torch.nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int, lr: float, *,
             params: Iterable[torch.nn.Parameter] | None = None, clip: float = 1.0,
             weight_decay: float = 0.0, log: Callable[[str], None] | None = None,
             after_step: Callable[[int], None] | None = None,
             schedule: Callable[[int], float] | None = None) -> list[float]:
    """`steps` AdamW steps on `loss_at(step)` over `params` (default: every UNet parameter);
    gradients clipped to `clip`; `after_step(step)` runs after each update (e.g. an EMA);
    `schedule(step)` scales the rate (None: constant). The UNet is left with requires_grad off.
    Returns the losses."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RevivalError(f"the number of fine-tuning steps must be a positive integer, got {steps!r}.")
    if not lr > 0:
        raise RevivalError(f"the learning rate must be positive, got {lr!r}.")
    params = list(unet.parameters() if params is None else params)
    was = unet.training
    unet.eval()   # no dropout: a run depends on its seed only
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    try:
        for step in range(steps):
            if schedule is not None:
                for g in opt.param_groups:
                    g["lr"] = lr * schedule(step)
            loss = loss_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(step)
            losses.append(float(loss.detach()))
            if log is not None and ((step + 1) % 50 == 0 or step + 1 == steps):
                log(f"step {step + 1}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    finally:
        for p in unet.parameters():
            p.requires_grad_(False)
            p.grad = None
        unet.train(was)
    return losses
