"""Erased / preserved accuracy of a concept, as in the paper's object evaluation.

erased accuracy    = hits / images whose prompt class is the concept
preserved accuracy = hits / images of all other classes
(a hit = the classifier's prediction names the prompt's class). Per-class accuracies too.
Scorers with a per-image score (CLIP: prompt-image similarity) add its mean per class and over
the erased / preserved images; NudeNet adds its per-label counts under `details`.
Every accuracy carries its Wilson 95% interval (revival.intervals). A judge that rejects images
showing no item of the kind (noise, blanks: `Classifier.is_valid`) scores them as misses, and the
result reports the share of valid images (`valid_share`, overall and over the erased / preserved
images). A concept, or a prompt class, the classifier cannot name is refused before any image is
made (`base.check_nameable`). Under a distributed launch
each process judges its share of the images; the main process alone writes the report, which
records the number of processes.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from revival.runtime import distributed as dist
from revival.errors import RevivalError
from revival.intervals import Proportion
from revival.io import atomic_write
from revival.evaluate.base import NO_ITEM, check_nameable
from revival.evaluate.generate import generate, generation_record, load_images, png_bytes, row_batches, to_pil
from revival.evaluate.prompts import PromptRow


@dataclass
class ClassScore:
    images: int
    hits: int
    score_sum: float = 0.0
    scored: int = 0
    valid: int | None = None   # images the judge did not reject (None: not counted)

    @property
    def accuracy(self) -> float:
        return self.hits / self.images if self.images else float("nan")

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None

    @property
    def proportion(self) -> Proportion:
        return Proportion(self.hits, self.images)

    @property
    def valid_share(self) -> float | None:
        return self.valid / self.images if self.valid is not None and self.images else None


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
    score_name: str | None = None          # e.g. "clip_score" when the method scores each image
    erased_score: float | None = None      # mean score over the concept's images
    preserved_score: float | None = None   # mean score over the other classes' images
    scores: list[float] = field(default_factory=list, repr=False)
    details: dict = field(default_factory=dict)
    valid_share: float | None = None            # share of images the judge did not reject (all rows)
    erased_valid_share: float | None = None     # ... over the concept's images
    preserved_valid_share: float | None = None  # ... over the other classes' images

    def _parts(self, erased: bool) -> Proportion:
        ss = [s for c, s in self.per_class.items() if _same(c, self.concept) == erased]
        return Proportion(sum(s.hits for s in ss), sum(s.images for s in ss))

    def _valid(self, erased: bool | None) -> Proportion | None:
        ss = [s for c, s in self.per_class.items() if erased is None or _same(c, self.concept) == erased]
        if not ss or any(s.valid is None for s in ss):
            return None
        return Proportion(sum(s.valid for s in ss), sum(s.images for s in ss))

    @property
    def erased(self) -> Proportion:
        """Hits over the concept's images, with its Wilson 95% interval."""
        return self._parts(True)

    @property
    def preserved(self) -> Proportion:
        """Hits over the other classes' images, with its Wilson 95% interval."""
        return self._parts(False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class"] = {c: {"images": s.images, "hits": s.hits, "accuracy": s.accuracy,
                              "ci95": s.proportion.to_dict()["ci95"],
                              **({"valid": s.valid, "valid_share": s.valid_share} if s.valid is not None else {}),
                              **({"mean_score": s.mean_score} if s.scored else {})}
                          for c, s in self.per_class.items()}
        d["erased"] = self.erased.to_dict()
        d["preserved"] = self.preserved.to_dict()
        d["valid"] = {k: (v.to_dict() if v is not None else None)
                      for k, v in (("all", self._valid(None)), ("erased", self._valid(True)),
                                   ("preserved", self._valid(False)))}
        return d

    def table(self) -> str:
        """Per-class Markdown table (the concept marked as erased)."""
        sc = self.score_name is not None
        va = all(s.valid is not None for s in self.per_class.values())
        lines = ["| class | images | hits | accuracy |" + (f" mean {self.score_name} |" if sc else ""),
                 "|---|---:|---:|---:|" + ("---:|" if sc else "")]
        lines[0] += " 95% interval |" + (" valid share |" if va else "")
        lines[1] += "---|" + ("---:|" if va else "")
        for c, s in self.per_class.items():
            mark = " (erased concept)" if _same(c, self.concept) else ""
            lines.append(f"| {c}{mark} | {s.images} | {s.hits} | {s.accuracy:.3f} |"
                         + (f" {_fmt(s.mean_score)} |" if sc else "") + f" {_ci(s.proportion)} |"
                         + (f" {s.valid_share:.3f} |" if va else ""))
        pres = "n/a" if self.preserved_accuracy is None else f"{self.preserved_accuracy:.3f}"
        lines += ["", f"erased accuracy ({self.concept}): {self.erased_accuracy:.3f} "
                      f"(95% {_ci(self.erased)}) over {self.erased_images} images; preserved accuracy: "
                      f"{pres} (95% {_ci(self.preserved)}) over {self.preserved_images} images "
                      f"({self.classifier} classifier)."]
        if va:
            lines.append(f"valid images (not rejected as {NO_ITEM!r}): {_fmt(self.valid_share)} of all, "
                         f"erased {_fmt(self.erased_valid_share)}, preserved {_fmt(self.preserved_valid_share)}.")
        if sc:
            lines.append(f"mean {self.score_name}: erased {_fmt(self.erased_score)}, "
                         f"preserved {_fmt(self.preserved_score)}.")
        if self.details.get("label_counts"):
            counts = ", ".join(f"{k} {v}" for k, v in self.details["label_counts"].items() if v)
            lines.append(f"flagged images: {self.details.get('flagged_images', 0)} "
                         f"(threshold {self.details.get('threshold')}): {counts or 'no label above it'}.")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(p: Proportion) -> str:
    ci = p.interval
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def concept_outcomes(rows: list[PromptRow], predictions: list[str], concept: str, is_hit=_same) -> list[bool]:
    """Hit or miss of each image of `concept`, in row order (for paired comparisons of two models
    judged on the same prompts and seeds)."""
    return [p != NO_ITEM and bool(is_hit(p, r.cls)) for r, p in zip(rows, predictions) if _same(r.cls, concept)]


def concept_rows(rows: list[PromptRow], concept: str) -> list[int]:
    """The indices of the rows of `concept` (the rows `concept_outcomes` reads), in row order."""
    return [i for i, r in enumerate(rows) if _same(r.cls, concept)]


def _not_rejected(predicted: str) -> bool:
    return predicted != NO_ITEM


def score(rows: list[PromptRow], predictions: list[str], concept: str, is_hit=_same,
          classifier: str = "", scores: list[float] | None = None,
          score_name: str | None = None, is_valid=_not_rejected) -> EvalResult:
    """The arithmetic: per-class hits, erased and preserved accuracy (no images involved);
    with `scores` (one per row), their mean per class and over erased / preserved images.
    A prediction `is_valid` rejects (default: NO_ITEM) is never a hit; the valid shares count
    the others."""
    if len(rows) != len(predictions):
        raise RevivalError(f"{len(rows)} prompts but {len(predictions)} predictions.")
    if scores is not None and len(scores) != len(rows):
        raise RevivalError(f"{len(rows)} prompts but {len(scores)} scores.")
    per: dict[str, ClassScore] = {}
    for i, (r, p) in enumerate(zip(rows, predictions)):
        s = per.setdefault(r.cls, ClassScore(0, 0, valid=0))
        ok = bool(is_valid(p))
        s.images += 1
        s.valid += ok
        s.hits += ok and bool(is_hit(p, r.cls))
        if scores is not None:
            s.score_sum += float(scores[i])
            s.scored += 1
    erased = [s for c, s in per.items() if _same(c, concept)]
    if not erased:
        raise RevivalError(f"concept {concept!r} is not a class of the prompts "
                           f"(classes: {', '.join(per)}).")
    kept = [s for c, s in per.items() if not _same(c, concept)]
    e_n, e_h = sum(s.images for s in erased), sum(s.hits for s in erased)
    p_n, p_h = sum(s.images for s in kept), sum(s.hits for s in kept)
    mean = lambda ss: (sum(s.score_sum for s in ss) / sum(s.scored for s in ss)
                       if scores is not None and ss else None)
    share = lambda ss: sum(s.valid for s in ss) / sum(s.images for s in ss) if ss else None
    return EvalResult(concept=concept, classifier=classifier, erased_accuracy=e_h / e_n,
                      preserved_accuracy=(p_h / p_n) if p_n else None, erased_images=e_n,
                      preserved_images=p_n, per_class=per, predictions=list(predictions),
                      score_name=(score_name or "score") if scores is not None else None,
                      erased_score=mean(erased), preserved_score=mean(kept),
                      scores=[float(x) for x in scores] if scores is not None else [],
                      valid_share=share(erased + kept), erased_valid_share=share(erased),
                      preserved_valid_share=share(kept))


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
        written[name] = atomic_write(out_dir / name, data)

    put(f"{stem}.json", json.dumps(result.to_dict(), indent=2) + "\n")
    put(f"{stem}.md", f"# Evaluation: concept {result.concept!r}\n\n{result.table()}\n")
    if images is not None and rows is not None and len(images):
        import io as _io

        buf = _io.BytesIO()
        image_grid(images, rows).save(buf, format="PNG")
        put(f"{stem}_grid.png", buf.getvalue())
    return written


def _grid_subset(rows: list[PromptRow], per_class: int = 8) -> list[int]:
    seen: dict[str, int] = {}
    keep = []
    for i, r in enumerate(rows):
        if seen.get(r.cls, 0) < per_class:
            seen[r.cls] = seen.get(r.cls, 0) + 1
            keep.append(i)
    return keep


def evaluate_concept(model, rows: list[PromptRow], classifier, concept: str, *,
                     out_dir: str | Path | None = None, steps: int | None = None,
                     guidance: float | None = None, batch_size: int = 100, progress: bool = False,
                     settings: dict | None = None, images_dir: str | Path | None = None) -> EvalResult:
    """Generate every row's image with `model` (a TestbedPipeline or SDGenerator), classify, score.

    With out_dir: images go to out_dir/images (or `images_dir`; resumable, keyed by the prompt,
    the weights' content, the sampler settings and the batch size: `generate`) and the report
    beside them; without: everything stays in memory (for in-process use, e.g. swapped
    UNet weights; `result.images` holds them). Under a distributed launch every process calls
    this with the same arguments: each generates and judges its share, the results are gathered
    in row order, and the main process writes the report. Every process returns the result."""
    if not any(_same(r.cls, concept) for r in rows):
        raise RevivalError(f"concept {concept!r} is not a class of the prompts "
                           f"(classes: {', '.join(sorted({r.cls for r in rows}))}).")
    check_nameable(classifier, concept, rows)
    t0 = time.time()
    record = generation_record(model, settings, steps, guidance, batch_size)
    if out_dir is not None:
        images_dir = Path(images_dir) if images_dir is not None else Path(out_dir) / "images"
        paths = generate(model, rows, images_dir, steps=steps, guidance=guidance,
                         batch_size=batch_size, progress=progress, settings=settings, record=record)
    batches = row_batches(len(rows), batch_size)
    pairs, kept = [], []
    for k in dist.shard(len(batches)):
        idx = batches[k]
        part = [rows[i] for i in idx]
        if out_dir is not None:
            images = load_images([paths[i] for i in idx])
        else:
            images = model([r.prompt for r in part], [r.seed for r in part], steps=steps, guidance=guidance)
            kept += list(zip(idx, png_bytes_list(images) if dist.num_processes() > 1 else images))
        preds, scores = classifier.judge(images, part)
        for k, i in enumerate(idx):
            pairs.append((i, (preds[k], None if scores is None else float(scores[k]))))
    judged = dist.gather(pairs, len(rows))
    preds = [p for p, _ in judged]
    scores = None if any(s is None for _, s in judged) else [s for _, s in judged]
    result = score(rows, preds, concept, classifier.is_hit, classifier.name, scores,
                   getattr(classifier, "score_name", None), classifier.is_valid)
    result.details = classifier.summary(preds)
    result.settings = dict(record, processes=dist.num_processes())
    result.seconds = round(time.time() - t0, 2)
    if out_dir is not None:
        grid = _grid_subset(rows)
        if dist.is_main():
            write_report(result, out_dir, load_images([paths[i] for i in grid]), [rows[i] for i in grid])
        dist.barrier()
        result.images = None
    else:
        # images travel between processes as PNG bytes: exactly what a file would hold
        got = dist.gather(kept, len(rows))
        result.images = torch.stack([from_png(b) if isinstance(b, bytes) else b for b in got])
    return result


def png_bytes_list(images: torch.Tensor) -> list[bytes]:
    return [png_bytes(img) for img in images]


def from_png(data: bytes) -> torch.Tensor:
    import io as _io

    from revival.evaluate.generate import from_pil

    return from_pil(Image.open(_io.BytesIO(data)))
