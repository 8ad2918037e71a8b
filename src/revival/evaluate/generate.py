"""Generation: prompts x seeds -> PNG files, batched, classifier-free guidance, resumable,
data-parallel.

Works for the embedded testbed and for any local diffusers StableDiffusionPipeline folder
(`revival.model.loader.load_model`); in both the UNet weights can be swapped for a checkpoint (pruned /
revived / defended). A cached image is keyed by everything that determines it:

* its name (`image_name`) holds the case, the class, the seed and a digest of the prompt text and
  class, so other prompts of the same classes and seeds get other files (made, never reused);
* the folder's generation.json (`generation_record`) holds the UNet's CONTENT (a sha256 of its
  tensors), the text encoder's (Stable Diffusion), the sampler (class and configuration), the
  steps, the guidance, the dtype and the batch sizes: a folder made with any of them different
  is refused in one sentence. The batch size is part of the key because an image's last bits
  depend on the batch it is made in (a matrix product rounds by its shape; measured on the
  testbed: PNGs differ between batches of 40 and of 3), even though its initial noise does not.

Under `accelerate launch` / `torchrun` each process makes and writes its share of the images
(each image once; rows are shared out in fixed batches, so the files are the same bytes whatever
the number of processes).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from revival.runtime import distributed as dist
from revival.errors import RevivalError
from revival.io import atomic_write
from revival.evaluate.prompts import PromptRow
from revival.runtime.digest import unet_digest


def prompt_digest(row: PromptRow) -> str:
    """12 hex digits of sha256 over the row's prompt text and class."""
    return hashlib.sha256(f"{row.prompt}\x00{row.cls}".encode()).hexdigest()[:12]


def image_name(row: PromptRow) -> str:
    """Case, class, seed and the prompt's digest: another prompt never matches a cached image."""
    slug = re.sub(r"[^a-z0-9]+", "-", row.cls.lower()).strip("-") or "x"
    return f"{row.case:05d}_{slug}_s{row.seed}_p{prompt_digest(row)}.png"


def to_pil(image: torch.Tensor) -> Image.Image:
    """[C,H,W] in [0,1] -> PIL (L for one channel, RGB for three)."""
    arr = (image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def from_pil(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img)
    t = torch.from_numpy(arr.copy()).float().div(255)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def _sampler(model) -> dict:
    sched = getattr(model, "scheduler", None) or getattr(getattr(model, "pipe", None), "scheduler", None)
    if sched is None:
        return {}
    config = {k: v for k, v in dict(getattr(sched, "config", {}) or {}).items() if not str(k).startswith("_")}
    config = json.dumps(_canonical(config), sort_keys=True)   # diffusers' private keys (_use_default_values: a set's order) left out
    return {"sampler": type(sched).__name__, "sampler_config_sha256": hashlib.sha256(config.encode()).hexdigest()}


def _canonical(obj):
    """A JSON-able copy that is the same in every process: sets sorted (their order follows the
    process's hash seed), other objects by type name (their repr may hold a memory address)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(str(_canonical(v)) for v in obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return type(obj).__name__


def generation_record(model, settings: dict | None, steps, guidance, batch_size: int | None = None) -> dict:
    """What an image folder is keyed by: the settings, the UNet's (and a Stable Diffusion text
    encoder's) content, the sampler, steps and guidance as they will run (a model's defaults
    filled in), the dtype, and the batch sizes (`batch_size`: the rows made together;
    `model_batch_size`: the model's own chunking within them)."""
    record = dict(settings or {},
                  steps=getattr(model, "default_steps", None) if steps is None else int(steps),
                  guidance=getattr(model, "default_guidance", None) if guidance is None else float(guidance))
    record.update(_sampler(model))
    unet = getattr(model, "unet", None)
    if isinstance(unet, torch.nn.Module):
        record["unet_sha256"] = unet_digest(unet)
        record["dtype"] = str(getattr(model, "dtype", next(unet.parameters()).dtype)).replace("torch.", "")
    encoder = getattr(getattr(model, "pipe", None), "text_encoder", None)
    if isinstance(encoder, torch.nn.Module):
        record["text_encoder_sha256"] = unet_digest(encoder)
    if batch_size is not None:
        record["batch_size"] = int(batch_size)
        record["model_batch_size"] = getattr(model, "batch_size", None)
    return record


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not (progress and dist.is_main()), leave=False)


def row_batches(n: int, batch_size: int) -> list[list[int]]:
    """Rows 0..n-1 in fixed batches of `batch_size`. Batches, not rows, are what processes share
    and what a resumed run regenerates: a GEMM's last bits depend on the batch it runs in, so
    fixed batches make every image's bytes independent of the process count and of interruptions."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RevivalError(f"--batch-size must be a positive integer, got {batch_size!r}.")
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def generate(model, rows: list[PromptRow], out_dir: str | Path, *, steps: int | None = None,
             guidance: float | None = None, batch_size: int = 100, progress: bool = True,
             settings: dict | None = None, record: dict | None = None) -> list[Path]:
    """Write one PNG per row into out_dir (named by case, class and seed); images already there
    are kept and skipped, so an interrupted run resumes (a batch with a missing image is made
    again whole, its missing images written: `row_batches`). Returns the paths in row order.

    out_dir/generation.json records the settings, the sampler, the batch sizes and the weights'
    content digests (`generation_record`; `record` passes one already computed, with the same
    `batch_size`); a folder made with other settings or other weights is refused rather than
    silently mixed, and an image of another prompt is never reused (`image_name`). Under a distributed launch
    every process calls this; each makes its share of the missing images."""
    out_dir = Path(out_dir)
    record = record if record is not None else generation_record(model, settings, steps, guidance, batch_size)
    rec_path = out_dir / "generation.json"
    if rec_path.is_file():
        try:
            old = json.loads(rec_path.read_text())
        except ValueError:
            raise RevivalError(f"{rec_path} is not valid JSON; choose another output folder.") from None
        if old != record:
            what = ("other UNet weights" if old.get("unet_sha256") != record.get("unet_sha256")
                    else "other settings")
            raise RevivalError(f"{out_dir} holds images generated with {what} ({_diff(old, record)}); "
                               "choose another output folder.")
    paths = [out_dir / image_name(r) for r in rows]
    batches = row_batches(len(rows), batch_size)
    todo = [k for k, idx in enumerate(batches) if not all(paths[i].is_file() for i in idx)]
    dist.barrier()  # every process has listed the folder before any image is written
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        if not rec_path.is_file():
            atomic_write(rec_path, json.dumps(record, indent=2) + "\n")
    dist.barrier()
    bar = _bar(sum(len(batches[k]) for k in todo), f"generate {out_dir.name}", progress)
    for k in [todo[j] for j in dist.shard(len(todo))]:
        idx = batches[k]
        images = model([rows[i].prompt for i in idx], [rows[i].seed for i in idx],
                       steps=steps, guidance=guidance)
        for i, img in zip(idx, images):
            if not paths[i].is_file():
                atomic_write(paths[i], png_bytes(img))
        bar.update(len(idx) * dist.num_processes())
    bar.close()
    dist.barrier()
    return paths


def _diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {str(old.get(k))[:16]} -> {str(new.get(k))[:16]}" for k in keys[:4])


def load_images(paths: list[Path]) -> torch.Tensor:
    return torch.stack([from_pil(Image.open(p)) for p in paths])
