"""TestbedPipeline: prompts x seeds -> images, with DDIM and classifier-free guidance.

One UNet forward per denoising step (per chunk of at most `batch_size` images): the unconditional
and conditional halves go through the UNet together, as in Stable Diffusion's pipeline, so forward
hooks on `pipe.unet` see every step once. The images are cut into equal chunks: on a CPU small
ones run faster than one large batch (benchmarks/generation_batch.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from revival.errors import RevivalError
from revival.testbed import model as M
from revival.testbed import text as T

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TESTBED_UNET_DIR = WEIGHTS_DIR / "unet"          # testbed v1: the object task (stages 1-2)
TASKS_UNET_DIR = WEIGHTS_DIR / "unet-tasks"      # testbed v2: + styles and the attribute (stage 3 from v1)


def testbed_unet_dir(task: str = "objects"):
    """The committed UNet of a task: v1 for objects (every object figure was measured on it),
    v2 (v1 trained further on the style and attribute captions) for artists and nudity."""
    return TESTBED_UNET_DIR if task in (None, "objects") else TASKS_UNET_DIR
SETTINGS_PATH = WEIGHTS_DIR / "testbed.json"
DEFAULT_STEPS = 15
DEFAULT_GUIDANCE = 4.0
CPU_BATCH, DEVICE_BATCH = 48, 256   # the most images a chunk by default, on a CPU and on an accelerator


def chunks(n: int, most: int) -> list[tuple[int, int]]:
    """(start, stop) of n images cut into the fewest equal chunks of at most `most`."""
    if n <= 0:
        return []
    k = -(-n // most)
    size = -(-n // k)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def testbed_settings() -> dict:
    """The committed testbed.json (resolution, tokens, classes, captions, training record)."""
    if not SETTINGS_PATH.is_file():
        raise RevivalError(f"the testbed settings are missing: {SETTINGS_PATH}.")
    return json.loads(SETTINGS_PATH.read_text())


class TestbedPipeline:
    """The embedded text-to-image model. Attributes: unet, scheduler, classes, resolution."""

    def __init__(self, unet: UNet2DConditionModel, device: str = "cpu", *,
                 default_steps: int = DEFAULT_STEPS, default_guidance: float = DEFAULT_GUIDANCE,
                 batch_size: int | None = None, dtype: torch.dtype = torch.float32):
        unet = unet.eval().to(device=device)
        if unet.dtype != dtype:  # (diffusers warns on every dtype cast, even a no-op one)
            unet = unet.to(dtype=dtype)
        self.unet = unet
        self.device = torch.device(device)
        self.dtype = dtype
        self.scheduler = M.sample_scheduler()
        self.classes = list(T.CLASSES)
        self.resolution = int(unet.config.sample_size)
        self.default_steps = default_steps
        self.default_guidance = default_guidance
        self.batch_size = int(batch_size) if batch_size is not None else (
            CPU_BATCH if self.device.type == "cpu" else DEVICE_BATCH)
        self._encoder: T.TextEncoder | None = None

    def fingerprint(self) -> str:
        """What, besides the UNet's weights, determines this pipeline's images: its class, device,
        dtype, sampler, default settings, chunking (batch size), and the text encoder's weights and length
        (the evaluation memo's key, `revival.evaluate.memo`)."""
        from revival.runtime.digest import module_digest

        if self._encoder is None:
            self._encoder = T.shared_encoder()
        enc = self._encoder
        return repr((type(self).__name__, str(self.device), str(self.dtype), dict(self.scheduler.config),
                     self.classes, self.resolution, self.default_steps, self.default_guidance,
                     ("equal chunks of at most", self.batch_size),
                     type(enc).__name__, enc.tokens, str(enc.device), module_digest(enc.model),
                     repr(self.unet.config)))

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Token states [N, TOKENS, 384] of the frozen text encoder (memoised per prompt)."""
        if self._encoder is None:
            self._encoder = T.shared_encoder()
        return self._encoder(list(prompts)).to(self.device)

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        """x_T per image from its own seeded generator: an image depends on its seed only."""
        shape = (1, self.unet.config.in_channels, self.resolution, self.resolution)
        return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                          for s in seeds]).to(self.device)  # drawn on the CPU: the same on every device

    @torch.no_grad()
    def __call__(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, batch_size: int | None = None,
                 negative_prompt: str = "") -> torch.Tensor:
        """Images [N, 1, H, W] float32 in [0, 1] (on the CPU) for prompts[i] with seeds[i].

        The UNet runs in the pipeline's dtype; the sampler's state x_t stays float32."""
        prompts, seeds = list(prompts), list(seeds)
        if len(prompts) != len(seeds):
            raise RevivalError(f"got {len(prompts)} prompts but {len(seeds)} seeds.")
        steps = self.default_steps if steps is None else int(steps)
        guidance = self.default_guidance if guidance is None else float(guidance)
        if steps < 1:
            raise RevivalError(f"steps must be at least 1, got {steps}.")
        bs = batch_size or self.batch_size
        out = [self._generate(prompts[a:b], seeds[a:b], steps, guidance, negative_prompt)
               for a, b in chunks(len(prompts), bs)]
        if not out:
            return torch.zeros(0, 1, self.resolution, self.resolution)
        return torch.cat(out)

    def _generate(self, prompts, seeds, steps, guidance, negative_prompt) -> torch.Tensor:
        n = len(prompts)
        cfg = guidance != 1.0
        cond = self.encode(prompts)
        if cfg:
            cond = torch.cat([self.encode([negative_prompt] * n), cond])
        cond = cond.to(self.dtype)
        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        x = self.initial_noise(seeds)
        for t in sched.timesteps:
            inp = torch.cat([x, x]) if cfg else x
            eps = self.unet(inp.to(self.dtype), t, encoder_hidden_states=cond).sample.float()
            if cfg:
                e_u, e_c = eps.chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            x = sched.step(eps, t, x).prev_sample
        return ((x.float().cpu() + 1) / 2).clamp(0, 1)


def state_from_path(path: Path) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """(config or None, tensors in diffusers naming) of a UNet folder or weights file."""
    from revival.io import load_checkpoint

    ckpt = load_checkpoint(path)
    config = None
    folder = path if path.is_dir() else None
    if folder is not None:
        for cand in (folder / "config.json", folder / "unet" / "config.json"):
            if cand.is_file():
                config = json.loads(cand.read_text())
                break
    tensors = {k: ckpt.tensors[k] for k in ckpt.tensors}
    return config, tensors


def load_unet(unet: str | Path | None = None,
              unet_state: dict[str, torch.Tensor] | None = None) -> UNet2DConditionModel:
    """The testbed UNet; `unet` = a diffusers UNet folder or a weights file (diffusers or LDM
    naming); `unet_state` = tensors (diffusers naming) loaded over it, in memory."""
    path = TESTBED_UNET_DIR if unet is None else Path(unet)
    if not path.exists():
        raise RevivalError(f"UNet not found: {path}." if unet is not None else
                           f"the testbed weights are missing: {path} (run `revival testbed train`).")
    config, tensors = state_from_path(path)
    if config is None:
        config = json.loads((TESTBED_UNET_DIR / "config.json").read_text())
    model = UNet2DConditionModel.from_config(config)
    load_into(model, tensors, str(path))
    if unet_state is not None:
        load_into(model, unet_state, "unet_state", partial=True)
    return model


def load_into(model, tensors, where: str, partial: bool = False) -> None:
    """Copy `tensors` (diffusers naming) into `model`'s parameters, each cast to the parameter's
    dtype and device; unknown names, missing ones (unless `partial`), shape mismatches and NaN/inf
    are refused with one sentence naming `where`."""
    own = model.state_dict()
    unknown = [k for k in tensors if k not in own]
    if unknown:
        raise RevivalError(f"{where} has {len(unknown)} tensors the testbed UNet does not have "
                           f"(first: {unknown[0]}).")
    missing = [k for k in own if k not in tensors]
    if missing and not partial:
        raise RevivalError(f"{where} lacks {len(missing)} testbed UNet tensors (first: {missing[0]}).")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise RevivalError(f"{where}: {k} has shape {tuple(v.shape)}, the testbed UNet expects "
                               f"{tuple(own[k].shape)}.")
        if not torch.isfinite(v).all():
            raise RevivalError(f"{where}: {k} contains NaN or inf.")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.to(device=own[k].device, dtype=own[k].dtype))


def load_pipeline(unet: str | Path | None = None, device: str = "cpu", *,
                  unet_state: dict[str, torch.Tensor] | None = None,
                  dtype: torch.dtype = torch.float32) -> TestbedPipeline:
    """The embedded testbed pipeline on `device` in `dtype`; see `load_unet` for `unet` and
    `unet_state`. (`revival.model.loader.load_model` applies the device/dtype defaults.)"""
    settings = testbed_settings() if SETTINGS_PATH.is_file() else {}
    return TestbedPipeline(load_unet(unet, unet_state), device, dtype=dtype,
                           default_steps=settings.get("default_steps", DEFAULT_STEPS),
                           default_guidance=settings.get("default_guidance", DEFAULT_GUIDANCE))
