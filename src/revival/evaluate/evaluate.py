"""Erased / preserved accuracy of a concept, as in the paper's object evaluation.

erased accuracy    = hits / images whose prompt class is the concept
preserved accuracy = hits / images of all other classes
(a hit = the classifier's prediction names the prompt's class). Per-class accuracies too.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..errors import RevivalError
from .generate import generate, load_images, to_pil
from .prompts import PromptRow


@dataclass
class ClassScore:
    images: int
    hits: int

    @property
    def accuracy(self) -> float:
        return self.hits / self.images if self.images else float("nan")


@dataclass
class EvalResult:
    concept: str
    classifier: str
    erased_accuracy: float
    preserved_accuracy: float | None
    erased_images: int
    preserved_images: int
    per_class: dict[str, ClassScore]
    predictions: list[str] = field(default_factory=list, repr=False)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class"] = {c: {"images": s.images, "hits": s.hits, "accuracy": s.accuracy}
                          for c, s in self.per_class.items()}
        return d

    def table(self) -> str:
        """Per-class Markdown table (the concept marked as erased)."""
        lines = ["| class | images | hits | accuracy |", "|---|---:|---:|---:|"]
        for c, s in self.per_class.items():
            mark = " (erased concept)" if _same(c, self.concept) else ""
            lines.append(f"| {c}{mark} | {s.images} | {s.hits} | {s.accuracy:.3f} |")
        pres = "n/a" if self.preserved_accuracy is None else f"{self.preserved_accuracy:.3f}"
        lines += ["", f"erased accuracy ({self.concept}): {self.erased_accuracy:.3f} "
                      f"over {self.erased_images} images; preserved accuracy: {pres} "
                      f"over {self.preserved_images} images ({self.classifier} classifier)."]
        return "\n".join(lines)


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def score(rows: list[PromptRow], predictions: list[str], concept: str, is_hit=_same,
          classifier: str = "") -> EvalResult:
    """The arithmetic: per-class hits, erased and preserved accuracy (no images involved)."""
    if len(rows) != len(predictions):
        raise RevivalError(f"{len(rows)} prompts but {len(predictions)} predictions.")
    per: dict[str, ClassScore] = {}
    for r, p in zip(rows, predictions):
        s = per.setdefault(r.cls, ClassScore(0, 0))
        s.images += 1
        s.hits += bool(is_hit(p, r.cls))
    erased = [s for c, s in per.items() if _same(c, concept)]
    if not erased:
        raise RevivalError(f"concept {concept!r} is not a class of the prompts "
                           f"(classes: {', '.join(per)}).")
    kept = [s for c, s in per.items() if not _same(c, concept)]
    e_n, e_h = sum(s.images for s in erased), sum(s.hits for s in erased)
    p_n, p_h = sum(s.images for s in kept), sum(s.hits for s in kept)
    return EvalResult(concept=concept, classifier=classifier, erased_accuracy=e_h / e_n,
                      preserved_accuracy=(p_h / p_n) if p_n else None, erased_images=e_n,
                      preserved_images=p_n, per_class=per, predictions=list(predictions))


def image_grid(images: torch.Tensor, rows: list[PromptRow], per_class: int = 8,
               min_cell: int = 64) -> Image.Image:
    """One row per class (first `per_class` images), upscaled (nearest) to at least min_cell px."""
    by_cls: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_cls.setdefault(r.cls, [])
        if len(by_cls[r.cls]) < per_class:
            by_cls[r.cls].append(i)
    h, w = images.shape[-2:]
    scale = max(1, -(-min_cell // max(h, w)))
    cell_h, cell_w = h * scale, w * scale
    mode = "L" if images.shape[1] == 1 else "RGB"
    grid = Image.new(mode, (cell_w * per_class, cell_h * len(by_cls)), 0)
    for y, idx in enumerate(by_cls.values()):
        for x, i in enumerate(idx):
            tile = to_pil(images[i]).resize((cell_w, cell_h), Image.NEAREST)
            grid.paste(tile, (x * cell_w, y * cell_h))
    return grid


def write_report(result: EvalResult, out_dir: str | Path, images: torch.Tensor | None = None,
                 rows: list[PromptRow] | None = None, stem: str = "evaluation") -> dict[str, Path]:
    """out_dir/{stem}.json, {stem}.md (per-class table) and {stem}_grid.png; atomic writes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}

    def put(name: str, data: bytes | str):
        p = out_dir / name
        tmp = p.with_name(p.name + ".tmp")
        (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
        os.replace(tmp, p)
        written[name] = p

    put(f"{stem}.json", json.dumps(result.to_dict(), indent=2) + "\n")
    put(f"{stem}.md", f"# Evaluation: concept {result.concept!r}\n\n{result.table()}\n")
    if images is not None and rows is not None and len(images):
        p = out_dir / f"{stem}_grid.png"
        tmp = out_dir / f"{stem}_grid.tmp.png"
        image_grid(images, rows).save(tmp)
        os.replace(tmp, p)
        written[p.name] = p
    return written


def evaluate_concept(model, rows: list[PromptRow], classifier, concept: str, *,
                     out_dir: str | Path | None = None, steps: int | None = None,
                     guidance: float | None = None, batch_size: int = 100, progress: bool = False,
                     settings: dict | None = None) -> EvalResult:
    """Generate every row's image with `model` (a TestbedPipeline or SDGenerator), classify, score.

    With out_dir: images go to out_dir/images (resumable) and the report beside them;
    without: everything stays in memory (for in-process use, e.g. swapped UNet weights)."""
    if not any(_same(r.cls, concept) for r in rows):
        raise RevivalError(f"concept {concept!r} is not a class of the prompts "
                           f"(classes: {', '.join(sorted({r.cls for r in rows}))}).")
    t0 = time.time()
    if out_dir is not None:
        paths = generate(model, rows, Path(out_dir) / "images", steps=steps, guidance=guidance,
                         batch_size=batch_size, progress=progress, settings=settings)
        images = load_images(paths)
    else:
        chunks = []
        for b in range(0, len(rows), batch_size):
            part = rows[b:b + batch_size]
            chunks.append(model([r.prompt for r in part], [r.seed for r in part],
                                steps=steps, guidance=guidance))
        images = torch.cat(chunks)
    preds = classifier.predict(images)
    result = score(rows, preds, concept, classifier.is_hit, classifier.name)
    result.settings = dict(settings or {}, steps=steps, guidance=guidance)
    result.seconds = round(time.time() - t0, 2)
    if out_dir is not None:
        write_report(result, out_dir, images, rows)
    result.images = images  # not serialised; handy for the caller's own grids
    return result
