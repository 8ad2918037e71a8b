"""The one model loader of the model side (unlearn, generate, evaluate, experiment).

    load_model("testbed" | SD_FOLDER, unet=None, device=None, unet_state=None, dtype=None)
        -> a generator `model(prompts, seeds, steps=, guidance=) -> images [N,C,H,W] in [0,1]`
           with `.unet` (the torch module, hooked by ConceptPrune), `.unet_dir` (the checkpoint
           its weights came from), `.device`, `.dtype`; the testbed's also has `.classes`.
    (`revival.runtime.digest.unet_digest`: sha256 of a UNet's tensors, what an image cache is keyed by.)

Device and dtype follow `revival.runtime.device`: CUDA and fp16 when a GPU is present, else CPU and fp32.
Every image's initial noise comes from its own CPU generator seeded with the image's seed, so the
noise depends on the seed only (not on the batch, the process or the device). The image's last
bits can still depend on the batch it is made in (a matrix product rounds by its shape: 2 of 40
testbed PNGs differ between batches of 40 and of 3), so an image cache records the batch sizes
(`revival.evaluate.generate.generation_record`) and the number of processes does not change the
batches (`row_batches`).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from revival.runtime.device import placement
from revival.errors import RevivalError

TESTBED = "testbed"


class SDGenerator:
    """A local diffusers StableDiffusionPipeline with the TestbedPipeline call signature."""

    def __init__(self, pipe, device="cpu", dtype: torch.dtype = torch.float32, default_steps: int = 50,
                 default_guidance: float = 7.5, batch_size: int = 4, unet_dir: Path | None = None):
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = pipe.unet
        self.device, self.dtype = torch.device(device), dtype
        self.default_steps, self.default_guidance = default_steps, default_guidance
        self.batch_size = batch_size
        self.unet_dir = unet_dir

    @torch.no_grad()
    def __call__(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, batch_size: int | None = None) -> torch.Tensor:
        if len(prompts) != len(seeds):
            raise RevivalError(f"got {len(prompts)} prompts but {len(seeds)} seeds.")
        steps = self.default_steps if steps is None else int(steps)
        guidance = self.default_guidance if guidance is None else float(guidance)
        bs = batch_size or self.batch_size
        out = []
        for i in range(0, len(prompts), bs):
            # CPU generators: diffusers draws the noise on the CPU and moves it, so an image's
            # initial noise is the same on every device and in every batch.
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + bs]]
            res = self.pipe(prompt=list(prompts[i:i + bs]), generator=gens, num_inference_steps=steps,
                            guidance_scale=guidance, output_type="pt")
            out.append(res.images.float().cpu().clamp(0, 1))
        return torch.cat(out)


def load_sd(folder: str | Path, unet: str | Path | None = None, device=None,
            unet_state: dict[str, torch.Tensor] | None = None, *, dtype=None) -> SDGenerator:
    """A local StableDiffusionPipeline folder (model_index.json), safety checker off, offline,
    loaded with `torch_dtype`; `unet` swaps in other UNet weights (folder or file)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        raise RevivalError(f"{folder} is not a local diffusers pipeline folder "
                           "(model_index.json and unet/ are needed).")
    place = placement(device, dtype)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionPipeline

    try:
        with warnings.catch_warnings():  # newer diffusers prefer `dtype=`; torch_dtype works in all
            warnings.simplefilter("ignore", FutureWarning)
            pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                           local_files_only=True, torch_dtype=place.dtype)
    except Exception as exc:  # diffusers raises many types for broken folders
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RevivalError(f"could not load the Stable Diffusion pipeline in {folder}: {msg}") from None
    unet_dir = folder / "unet"
    if unet is not None:
        swap_unet(pipe.unet, Path(unet))
        unet_dir = Path(unet)
    if unet_state is not None:
        from revival.testbed.pipeline import load_into

        load_into(pipe.unet, unet_state, "unet_state", partial=True)
    return SDGenerator(pipe, place.device, place.dtype, unet_dir=unet_dir)


def swap_unet(model: torch.nn.Module, path: Path) -> None:
    """Load the UNet weights of a folder or file (diffusers or single-file naming) into `model`."""
    from revival.testbed.pipeline import load_into, state_from_path

    if not path.exists():
        raise RevivalError(f"UNet checkpoint not found: {path}.")
    _, tensors = state_from_path(path)
    unet_keys = set(model.state_dict())
    # A whole-pipeline file may carry VAE / text-encoder tensors too: keep the UNet's.
    tensors = {k: v for k, v in tensors.items() if k in unet_keys} or tensors
    load_into(model, tensors, str(path))


def load_model(model: str | Path | None = TESTBED, unet: str | Path | None = None, device=None,
               unet_state: dict[str, torch.Tensor] | None = None, *, dtype=None, task: str | None = None):
    """"testbed" (or None) -> the embedded TestbedPipeline; a local SD folder -> SDGenerator.

    device/dtype: see `revival.runtime.device` (None: CUDA + fp16 when present, else CPU + fp32).
    task: the testbed's task, which picks its committed UNet (`testbed.testbed_unet_dir`)."""
    if model is None or str(model) == TESTBED:
        from revival.testbed import load_pipeline, testbed_unet_dir

        place = placement(device, dtype)
        unet = unet if unet is not None or unet_state is not None else testbed_unet_dir(task)
        pipe = load_pipeline(unet, place.device, unet_state=unet_state, dtype=place.dtype)
        pipe.unet_dir = Path(unet) if unet is not None else testbed_unet_dir(task)
        return pipe
    if not Path(model).exists():
        raise RevivalError(f"model not found: {model} (give 'testbed' or a diffusers pipeline folder).")
    return load_sd(model, unet, device, unet_state, dtype=dtype)


def file_digest(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, sorted)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        if path.is_dir():
            h.update(f"{f.relative_to(path)}\n".encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()
