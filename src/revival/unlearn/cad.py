"""CAD-Erase-like unlearning: per row, zero the weights that most carry the concept's denoising loss.

After CAD-Erase (arXiv 2412.02542), as shared/reference/PAPER.md records it: in every
feed-forward linear of the UNet (``ff.net.0.proj`` AND ``ff.net.2``), each weight's
attribution to the concept is weight x gradient of the denoising loss; per row, the top
``ratio * in_features`` entries by the concept's attribution over the base prompts' are set
to zero. Both linears of a block then carry exact zeros, so each is the other's damaged side
information -- the case the attack's partner completion handles.

Our reading of the method (its code was not at hand):

1. x0 samples: the model's own generations for the target (concept) and base prompts (images
   for the testbed, latents for Stable Diffusion), prompt i with seed `seed + i`.
2. Denoising loss per prompt: || eps - unet(x_t, t, text) ||^2 at `timesteps` seeded draws of
   t and eps. Gradients are averaged over prompts and draws: g_target, g_base per weight.
3. Attribution A = |W * g| / mean |W * g| (normalised per layer); score = A_target - A_base.
4. Per row, the top k = round(ratio * in_features) entries by score are zeroed (a fixed count in
   every row: the pattern `revival.release.masks.zero_pattern` calls "cad").

Shapes: W [out, in]; masks bool [out, in], keyed by the weight's state-dict name.

Example::

    pipe = revival.testbed.load_pipeline()
    target, base = concept_prompts("sneaker", pipe.classes)
    masks, result = cad(pipe, target, base, CadConfig(ratio=0.02))
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from revival.errors import RevivalError
from revival.unlearn.result import UnlearnResult

FF_MODULES = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)$"


@dataclass(frozen=True)
class CadConfig:
    """CAD-Erase-like settings.

    ratio: share of each row's entries zeroed (per row, a fixed count).
    timesteps: (t, noise) draws per prompt for the denoising loss.
    seed: base seed (generation of prompt i: seed + i; draws: seeded per prompt).
    modules: regex over UNet module names (Linear layers) to prune; default both ff linears.
    inference_steps / guidance: sampler settings for the x0 samples (None: the model's).
    batch_size: prompts per backward pass.
    """

    ratio: float = 0.02
    timesteps: int = 4
    seed: int = 0
    modules: str = FF_MODULES
    inference_steps: int | None = None
    guidance: float | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio < 1.0):
            raise RevivalError(f"ratio must be in (0, 1), got {self.ratio!r}.")
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise RevivalError(f"timesteps must be a positive integer, got {self.timesteps!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise RevivalError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise RevivalError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        try:
            re.compile(self.modules)
        except re.error as exc:
            raise RevivalError(f"modules is not a valid regular expression ({exc}).") from None


# --------------------------------------------------------------------------- the model, either kind

class Denoiser:
    """The pieces of a text-to-image pipeline the gradient methods need, for the testbed
    pipeline or a diffusers StableDiffusionPipeline: text states, x0 samples, noising."""

    def __init__(self, pipeline, inference_steps: int | None = None, guidance: float | None = None):
        from revival.model.loader import SDGenerator

        if isinstance(pipeline, SDGenerator):  # revival.model.loader' wrapper: the diffusers pipeline inside
            pipeline = pipeline.pipe
        self.pipe = pipeline
        self.unet = pipeline.unet
        self.scheduler = pipeline.scheduler
        self.steps, self.guidance = inference_steps, guidance
        try:
            from diffusers import DiffusionPipeline
        except ImportError:  # pragma: no cover
            DiffusionPipeline = ()
        self.is_sd = isinstance(pipeline, DiffusionPipeline)
        self.device = next(self.unet.parameters()).device

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            if self.is_sd:
                return self.pipe.encode_prompt(list(prompts), self.device, 1, False)[0]
            return self.pipe.encode(list(prompts))

    def sample_x0(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        kw = {}
        with torch.no_grad():
            if self.is_sd:
                if self.steps is not None:
                    kw["num_inference_steps"] = self.steps
                if self.guidance is not None:
                    kw["guidance_scale"] = self.guidance
                gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
                return self.pipe(prompt=list(prompts), generator=gens, output_type="latent", **kw).images
            if self.steps is not None:
                kw["steps"] = self.steps
            if self.guidance is not None:
                kw["guidance"] = self.guidance
            return (self.pipe(list(prompts), list(seeds), **kw) * 2 - 1).to(self.device)

    def train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)


def find_linears(unet: torch.nn.Module, pattern: str) -> dict[str, torch.nn.Linear]:
    """Module name -> Linear of every module of `unet` whose name matches `pattern`."""
    rx = re.compile(pattern)
    found = {n: m for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and rx.search(n)}
    if not found:
        raise RevivalError(f"The UNet has no Linear layer matching {pattern!r}.")
    return found


def mean_gradients(model: Denoiser, prompts: Sequence[str], layers: dict[str, torch.nn.Linear],
                   config: CadConfig) -> dict[str, torch.Tensor]:
    """Mean gradient (fp32, on the weight's device) of the denoising loss of `prompts` with
    respect to each layer's weight, over the prompts' own x0 samples and seeded (t, eps) draws."""
    prompts = list(prompts)
    if not prompts:
        raise RevivalError("The prompt list is empty.")
    unet = model.unet
    grads = {n: torch.zeros(m.weight.shape, dtype=torch.float32, device=m.weight.device) for n, m in layers.items()}
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    for p in unet.parameters():
        p.requires_grad_(False)
    for m in layers.values():
        m.weight.requires_grad_(True)
    was_training = unet.training
    unet.eval()
    draws = 0
    try:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start:start + config.batch_size]
            seeds = [config.seed + start + i for i in range(len(batch))]
            x0 = model.sample_x0(batch, seeds)
            cond = model.encode(batch)
            for r in range(config.timesteps):
                g = torch.Generator(device="cpu").manual_seed(config.seed * 1_000_003 + start * 131 + r)
                t = torch.randint(0, model.train_timesteps(), (len(batch),), generator=g)
                eps = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
                xt = model.scheduler.add_noise(x0, eps, t.to(x0.device))
                pred = unet(xt, t.to(x0.device), encoder_hidden_states=cond).sample
                loss = (pred.float() - eps.float()).pow(2).mean()
                for m in layers.values():
                    m.weight.grad = None
                loss.backward()
                for n, m in layers.items():
                    grads[n] += m.weight.grad.float() * len(batch)
                draws += len(batch)
    finally:
        for n, p in unet.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = None
        unet.train(was_training)
    return {n: g / max(1, draws) for n, g in grads.items()}


def cad_masks(weights: dict[str, torch.Tensor], g_target: dict[str, torch.Tensor],
              g_base: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Per row, the top round(ratio * in) entries by normalised |W g_target| - |W g_base|."""
    masks = {}
    for key, w in weights.items():
        wf = w.detach().float()
        a_t = (wf * g_target[key].to(wf.device)).abs()
        a_b = (wf * g_base[key].to(wf.device)).abs()
        score = a_t / a_t.mean().clamp(min=1e-30) - a_b / a_b.mean().clamp(min=1e-30)
        k = max(1, int(round(ratio * w.shape[1])))
        top = torch.topk(score, k, dim=1).indices
        mask = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
        mask.scatter_(1, top, True)
        masks[key] = mask.cpu()
    return masks


def cad(pipeline, target_prompts: Sequence[str], base_prompts: Sequence[str],
        config: CadConfig = CadConfig(), *, progress: bool = False
        ) -> tuple[dict[str, torch.Tensor], UnlearnResult]:
    """CAD-Erase-like masks for `pipeline` (testbed or diffusers SD); the model is not modified.
    Returns (weight key -> bool mask [out, in], result)."""
    model = Denoiser(pipeline, config.inference_steps, config.guidance)
    layers = find_linears(model.unet, config.modules)
    seconds = {}
    t0 = time.perf_counter()
    g_t = mean_gradients(model, target_prompts, layers, config)
    seconds["gradients_target"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_b = mean_gradients(model, base_prompts, layers, config)
    seconds["gradients_base"] = time.perf_counter() - t0
    weights = {f"{n}.weight": m.weight for n, m in layers.items()}
    masks = cad_masks(weights, {f"{n}.weight": g for n, g in g_t.items()},
                      {f"{n}.weight": g for n, g in g_b.items()}, config.ratio)
    result = UnlearnResult("cad", asdict(config), len(target_prompts), len(base_prompts))
    result.add_masks(masks)
    result.seconds = seconds
    return masks, result
