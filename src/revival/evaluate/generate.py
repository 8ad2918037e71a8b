"""Generation: prompts x seeds -> PNG files, batched, classifier-free guidance, resumable,
data-parallel.

Works for the embedded testbed and for any local diffusers StableDiffusionPipeline folder
(`revival.models.load_model`); in both the UNet weights can be swapped for a checkpoint (pruned /
revived / defended). The image folder is keyed by the UNet's CONTENT (a sha256 of its tensors,
recorded in generation.json): images of other weights -- e.g. an older attack written to the same
path -- are never reused. Under `accelerate launch` / `torchrun` each process makes and writes its
share of the images (each image once; every image has its own seed, so the files are the same
bytes whatever the number of processes).
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import distributed as dist
from ..errors import RevivalError
from ..io import atomic_write
from .prompts import PromptRow
from ..models import unet_digest


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


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def generation_record(model, settings: dict | None, steps, guidance) -> dict:
    """What an image folder is keyed by: the settings, the sampler and the UNet's content."""
    record = dict(settings or {}, steps=steps, guidance=guidance)
    unet = getattr(model, "unet", None)
    if isinstance(unet, torch.nn.Module):
        record["unet_sha256"] = unet_digest(unet)
        record["dtype"] = str(getattr(model, "dtype", next(unet.parameters()).dtype)).replace("torch.", "")
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

    out_dir/generation.json records the settings, the sampler and the UNet's content digest
    (`generation_record`; `record` passes one already computed); a folder made with other
    settings or other weights is refused rather than silently mixed. Under a distributed launch
    every process calls this; each makes its share of the missing images."""
    out_dir = Path(out_dir)
    record = record if record is not None else generation_record(model, settings, steps, guidance)
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
    return ", ".join(f"{k}: {str(old.get(k))[:16]} -> {str(new.get(k))[:16]}" for k in keys[:3])


def load_images(paths: list[Path]) -> torch.Tensor:
    return torch.stack([from_pil(Image.open(p)) for p in paths])
