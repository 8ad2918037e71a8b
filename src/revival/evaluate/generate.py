"""Generation: prompts x seeds -> PNG files, batched, classifier-free guidance, resumable.

Works for the embedded testbed and for any local diffusers StableDiffusionPipeline folder; in
both the UNet weights can be swapped for a checkpoint (pruned / revived / defended).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import RevivalError
from .prompts import PromptRow

TESTBED = "testbed"


class SDGenerator:
    """A local diffusers StableDiffusionPipeline with the TestbedPipeline call signature."""

    def __init__(self, pipe, device: str = "cpu", default_steps: int = 50,
                 default_guidance: float = 7.5, batch_size: int = 4):
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = pipe.unet
        self.device = device
        self.default_steps, self.default_guidance = default_steps, default_guidance
        self.batch_size = batch_size

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
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + bs]]
            res = self.pipe(prompt=list(prompts[i:i + bs]), generator=gens, num_inference_steps=steps,
                            guidance_scale=guidance, output_type="pt")
            out.append(res.images.float().cpu().clamp(0, 1))
        return torch.cat(out)


def load_sd(folder: str | Path, unet: str | Path | None = None, device: str = "cpu",
            unet_state: dict[str, torch.Tensor] | None = None) -> SDGenerator:
    """A local StableDiffusionPipeline folder (model_index.json), safety checker off, offline."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise RevivalError(f"{folder} is not a diffusers pipeline folder (no model_index.json).")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                       requires_safety_checker=False,
                                                       local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise RevivalError(f"could not load the pipeline in {folder}: {str(exc).splitlines()[0]}") from None
    if pipe.unet.dtype != torch.float32 and device == "cpu":
        pipe.to(torch.float32)
    if unet is not None:
        _swap_unet(pipe.unet, Path(unet))
    if unet_state is not None:
        from ..testbed.pipeline import _load_into

        _load_into(pipe.unet, unet_state, "unet_state", partial=True)
    return SDGenerator(pipe, device)


def _swap_unet(model, path: Path) -> None:
    from ..testbed.pipeline import _load_into, _state_from_path

    if not path.exists():
        raise RevivalError(f"UNet checkpoint not found: {path}.")
    _, tensors = _state_from_path(path)
    unet_keys = set(model.state_dict())
    # A whole-pipeline file may carry VAE / text-encoder tensors too: keep the UNet's.
    tensors = {k: v for k, v in tensors.items() if k in unet_keys} or tensors
    _load_into(model, tensors, str(path))


def load_model(model: str | Path | None = TESTBED, unet: str | Path | None = None,
               device: str = "cpu", unet_state: dict[str, torch.Tensor] | None = None):
    """"testbed" (or None) -> the embedded TestbedPipeline; a folder -> SDGenerator."""
    if model is None or str(model) == TESTBED:
        from ..testbed import load_pipeline

        return load_pipeline(unet, device, unet_state=unet_state)
    if not Path(model).exists():
        raise RevivalError(f"model not found: {model} (give 'testbed' or a diffusers pipeline folder).")
    return load_sd(model, unet, device, unet_state)


def image_name(row: PromptRow) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", row.cls.lower()).strip("-") or "x"
    return f"{row.case:05d}_{slug}_s{row.seed}.png"


def to_pil(image: torch.Tensor) -> Image.Image:
    """[C,H,W] in [0,1] -> PIL (L for one channel, RGB for three)."""
    arr = (image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def from_pil(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img)
    t = torch.from_numpy(arr.copy()).float().div(255)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _save_png(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def generate(model, rows: list[PromptRow], out_dir: str | Path, *, steps: int | None = None,
             guidance: float | None = None, batch_size: int = 100, progress: bool = True,
             settings: dict | None = None) -> list[Path]:
    """Write one PNG per row into out_dir (named by case, class and seed); images already there
    are kept and skipped, so an interrupted run resumes. Returns the paths in row order.

    `settings` (model, unet, steps, guidance) is recorded in out_dir/generation.json; a folder
    made with other settings is refused rather than silently mixed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = dict(settings or {}, steps=steps, guidance=guidance)
    rec_path = out_dir / "generation.json"
    if rec_path.is_file():
        old = json.loads(rec_path.read_text())
        if old != record:
            raise RevivalError(f"{out_dir} holds images generated with other settings ({old}); "
                               "choose another output folder.")
    else:
        rec_path.write_text(json.dumps(record, indent=2) + "\n")
    paths = [out_dir / image_name(r) for r in rows]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    t0, done = time.time(), 0
    for b in range(0, len(todo), batch_size):
        idx = todo[b:b + batch_size]
        images = model([rows[i].prompt for i in idx], [rows[i].seed for i in idx],
                       steps=steps, guidance=guidance)
        for i, img in zip(idx, images):
            _save_png(to_pil(img), paths[i])
        done += len(idx)
        if progress:
            print(f"generated {done}/{len(todo)} images ({len(rows) - len(todo)} already there) "
                  f"{time.time() - t0:.0f}s", flush=True)
    return paths


def load_images(paths: list[Path]) -> torch.Tensor:
    return torch.stack([from_pil(Image.open(p)) for p in paths])
