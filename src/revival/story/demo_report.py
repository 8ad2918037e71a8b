"""Report writers: the demo's JSON, Markdown table, bar plot and image grid.

The demo report has this shape (accuracies and sign recovery are floats in [0, 1]; every
accuracy has its Wilson 95% interval under "intervals", over the image counts under "images")::

    {"concept": str,
     "accuracy":  {"erased": {stage: float for stage in STAGES}, "preserved": {...}},
     "intervals": {"erased": {stage: [low, high]}, "preserved": {...}},
     "images":    {"erased": int, "preserved": int},        # per stage
     "sign_recovery": {"completion": float,   # completion's sign over ALL pruned positions (before Top-K)
                       "kept": float,         # over the kept top-K
                       "all": float},         # kept and correct / all pruned (unrevived count wrong)
     "unlearn":   {"skill_ratio": float, "target_erasure": float | None, "reached": bool | None},
     "controls":  {name: {"erased", "preserved", "erased_ci95", "preserved_ci95"}},   # optional
     "paper_recipe": {"erased", "preserved", "erased_ci95", "preserved_ci95", "sign_recovery"},  # optional
     "utility":   {stage: {"fid", "kid"}},  # preserved classes vs real test images, testbed-CNN features
     "timings":   {stage: seconds}}

Every writer is atomic (temporary file, then rename): no partial output file is left behind.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch

from revival.errors import RevivalError
from revival.story.stages import HOLD_STAGES, LABELS, STAGES  # the chain, defined once

HOLD_LABELS = {s: LABELS[s] for s in HOLD_STAGES}
STAGE_LABELS = {s: LABELS[s] for s in STAGES}


def _atomic_write(path: Path, write) -> Path:
    """The project's one atomic writer (`revival.io.atomic_write`); creates the folder."""
    from revival.io import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


REPORT_KEYS = {"concept", "accuracy", "intervals", "images", "sign_recovery", "unlearn", "timings"}
SIGN_KEYS = {"completion", "kept", "all"}


def _fraction(v) -> bool:
    return isinstance(v, float) and 0.0 <= v <= 1.0


def _interval(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_fraction(x) for x in v) and v[0] <= v[1]


def validate_report(report: dict) -> dict:
    """Check the demo report's documented shape; returns it unchanged or raises RevivalError."""
    keys = set(report)
    if not REPORT_KEYS <= keys or not keys <= REPORT_KEYS | {"controls", "utility", "paper_recipe", "holds", "relearn"}:
        raise RevivalError(f"report keys are {sorted(report)}, not the documented ones.")
    if not isinstance(report["concept"], str):
        raise RevivalError("report concept must be a string.")
    for part, ok, what in (("accuracy", _fraction, "a float in [0, 1]"), ("intervals", _interval, "an interval [low, high]")):
        if set(report[part]) != {"erased", "preserved"}:
            raise RevivalError(f"report {part} must hold exactly 'erased' and 'preserved'.")
        for side in ("erased", "preserved"):
            values = report[part][side]
            if set(values) != set(STAGES):
                raise RevivalError(f"report {part}.{side} must hold exactly the stages {', '.join(STAGES)}.")
            for stage, v in values.items():
                if not ok(v):
                    raise RevivalError(f"report {part}.{side}.{stage} = {v!r} is not {what}.")
    if set(report["sign_recovery"]) != SIGN_KEYS:
        raise RevivalError(f"report sign_recovery must hold exactly {', '.join(sorted(SIGN_KEYS))}.")
    for k, v in report["sign_recovery"].items():
        if not _fraction(v):
            raise RevivalError(f"report sign_recovery.{k} = {v!r} is not a float in [0, 1].")
    for name, c in {**report.get("controls", {}), **report.get("holds", {}), **({"paper_recipe": report["paper_recipe"]}
                                                     if "paper_recipe" in report else {})}.items():
        if not (_fraction(c.get("erased")) and _fraction(c.get("preserved"))
                and _interval(c.get("erased_ci95")) and _interval(c.get("preserved_ci95"))):
            raise RevivalError(f"report control {name!r} must hold erased/preserved accuracies and their intervals.")
    for stage, u in report.get("utility", {}).items():
        if stage not in STAGES or not all(isinstance(u.get(k), float) and math.isfinite(u[k]) for k in ("fid", "kid")):
            raise RevivalError(f"report utility.{stage} must hold finite fid and kid of a known stage.")
    for k, v in report["timings"].items():
        if not (isinstance(k, str) and isinstance(v, float) and math.isfinite(v) and v >= 0):
            raise RevivalError(f"report timing {k!r} = {v!r} is not a non-negative number of seconds.")
    return report


CONTROL_LABELS = {
    "random_signs": "random signs (same kept positions, same magnitudes)",
    "flipped_signs": "flipped recovered signs",
    "original_signs": "the original's signs (same magnitudes)",
    "original_values": "the original's values at the kept positions",
}


def write_json(obj: dict, path) -> Path:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _ci(iv) -> str:
    return f"[{iv[0]:.2f}, {iv[1]:.2f}]"


def markdown_table(report: dict) -> str:
    """The demo report as Markdown: stage x (erased, preserved) accuracy with 95% intervals,
    the controls, sign recovery, timings."""
    acc, ci, n = report["accuracy"], report["intervals"], report["images"]
    un = report["unlearn"]
    how = (f"skill ratio {un['skill_ratio']:.4g}" + (
        f", the least that brings the erased accuracy to <= {un['target_erasure']} on validation prompts"
        + ("" if un["reached"] else " (NOT reached: the largest ratio tried)") if un.get("target_erasure") is not None else ""))
    lines = [
        f"# Concept revival on the testbed: erase `{report['concept']}`, revive, defend",
        "",
        f"Held-out evaluation prompts and seeds ({n['erased']} images of the erased class, {n['preserved']} of "
        f"the others per stage); 95% Wilson intervals in brackets. Unlearning: {how}.",
        "",
        "| stage | erased accuracy | preserved accuracy |",
        "|---|---:|---:|",
    ]
    for s in STAGES:
        lines.append(f"| {STAGE_LABELS[s]} | {acc['erased'][s]:.3f} {_ci(ci['erased'][s])} "
                     f"| {acc['preserved'][s]:.3f} {_ci(ci['preserved'][s])} |")
    for s, h in report.get("holds", {}).items():
        lines.append(f"| {HOLD_LABELS[s]} | {h['erased']:.3f} {_ci(h['erased_ci95'])} "
                     f"| {h['preserved']:.3f} {_ci(h['preserved_ci95'])} |")
    lines += relearn_lines(report.get("relearn") or {})
    if report.get("paper_recipe"):
        pr = report["paper_recipe"]
        lines += ["", f"The paper's recipe (SVT completion, same Top-K and magnitudes) on the unlearned model: erased "
                      f"{pr['erased']:.3f} {_ci(pr['erased_ci95'])}, preserved {pr['preserved']:.3f} "
                      f"{_ci(pr['preserved_ci95'])}; signs: completion {pr['sign_recovery']['completion']:.3f}, "
                      f"kept {pr['sign_recovery']['kept']:.3f}."]
    if report.get("controls"):
        lines += ["", "Controls: the revived model with the same kept positions and Neuron-Max magnitudes, "
                      "but other signs (or values).", "",
                  "| control | erased accuracy | preserved accuracy |", "|---|---:|---:|",
                  f"| recovered signs (the attack) | {acc['erased']['revived']:.3f} {_ci(ci['erased']['revived'])} "
                  f"| {acc['preserved']['revived']:.3f} {_ci(ci['preserved']['revived'])} |"]
        for name, c in report["controls"].items():
            lines.append(f"| {CONTROL_LABELS.get(name, name)} | {c['erased']:.3f} {_ci(c['erased_ci95'])} "
                         f"| {c['preserved']:.3f} {_ci(c['preserved_ci95'])} |")
    if report.get("utility"):
        u = report["utility"]
        lines += ["", "Utility of the preserved classes' images: FID / KID against real Fashion-MNIST test images "
                      "in the testbed classifier's feature space (lower is better; comparable within this table only).",
                  "", "| stage | FID (testbed-CNN) | KID (testbed-CNN) |", "|---|---:|---:|"]
        for s in STAGES:
            if s in u:
                lines.append(f"| {STAGE_LABELS[s]} | {u[s]['fid']:.2f} | {u[s]['kid']:.4f} |")
    sr = report["sign_recovery"]
    lines += [
        "",
        f"Sign recovery (attack on the unlearned model vs. the original): the completion's sign is right at "
        f"{sr['completion']:.3f} of ALL pruned positions (before Top-K; the paper's \"over 70%\" figure), "
        f"{sr['kept']:.3f} of the kept top-K; kept and right = {sr['all']:.3f} of all pruned.",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    for k, v in report["timings"].items():
        lines.append(f"| {k} | {v:.1f} |")
    return "\n".join(lines) + "\n"


def write_markdown(text: str, path) -> Path:
    return _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def bar_plot(report: dict, path) -> Path:
    """Grouped bars: erased and preserved accuracy at each stage."""
    plt = _mpl()
    acc = report["accuracy"]
    x = range(len(STAGES))
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    w = 0.38
    e = [acc["erased"][s] for s in STAGES]
    p = [acc["preserved"][s] for s in STAGES]
    ci = report.get("intervals")

    def err(side, vals):
        if not ci:
            return None
        return [[v - ci[side][s][0] for v, s in zip(vals, STAGES)], [ci[side][s][1] - v for v, s in zip(vals, STAGES)]]

    ax.bar([i - w / 2 for i in x], e, w, yerr=err("erased", e), capsize=3, label=f"erased ({report['concept']})",
           color="#c0392b")
    ax.bar([i + w / 2 for i in x], p, w, yerr=err("preserved", p), capsize=3, label="preserved (other classes)",
           color="#2c7fb8")
    for i, (a, b) in enumerate(zip(e, p)):
        ax.text(i - w / 2, a + 0.01, f"{a:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + w / 2, b + 0.01, f"{b:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels([STAGE_LABELS[s].replace(" (", "\n(") for s in STAGES], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("classifier accuracy")
    ax.set_title(f"Erase '{report['concept']}' -> revive -> defend")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, format="png")

    try:
        return _atomic_write(Path(path), write)
    finally:
        plt.close(fig)


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], columns: Sequence[str], path,
               tile: int = 64) -> Path:
    """A labelled PNG grid: one row per (label, images [N, C, H, W] in [0, 1]); `columns`
    labels the N columns (runs of equal labels share one header); an image holding NaN is a blank
    tile (not drawn). Tiles are upscaled to about `tile` pixels."""
    from PIL import Image, ImageDraw

    if not rows:
        raise RevivalError("image_grid needs at least one row.")
    n = rows[0][1].shape[0]
    if len(columns) != n:
        raise RevivalError("image_grid needs one column label per image.")
    h, w = rows[0][1].shape[-2:]
    scale = max(1, round(tile / max(h, w)))
    ch, cw = h * scale, w * scale
    pad, left, top = 3, 170, 24
    W = left + n * (cw + pad) + 4
    H = top + len(rows) * (ch + pad) + 4
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    j = 0
    while j < n:  # one header per run of equal column labels
        k = j
        while k + 1 < n and columns[k + 1] == columns[j]:
            k += 1
        x0, x1 = left + j * (cw + pad), left + (k + 1) * (cw + pad) - pad
        draw.text((x0 + 2, 6), str(columns[j]), fill="black")
        draw.line([(x0, top - 4), (x1, top - 4)], fill="gray")
        j = k + 1
    for i, (label, images) in enumerate(rows):
        if images.shape[0] != n:
            raise RevivalError("every grid row needs the same number of images.")
        y = top + i * (ch + pad)
        draw.text((4, y + ch // 2 - 6), label, fill="black")
        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        for j in range(n):
            if bool(torch.isnan(images[j]).any()):   # not drawn: a blank tile
                continue
            a = arr[j]
            if a.shape[0] == 1:
                a = a.expand(3, -1, -1)
            tile_img = Image.fromarray(a[:3].permute(1, 2, 0).contiguous().numpy(), "RGB")
            img.paste(tile_img.resize((cw, ch), Image.NEAREST), (left + j * (cw + pad), y))

    def write(tmp):
        img.save(tmp, format="PNG")

    return _atomic_write(Path(path), write)


def concept_table(reports: Sequence[dict]) -> str:
    """Markdown table over many demo reports (one concept a row) plus the mean row, whose
    erased and preserved figures carry Wilson 95% intervals over the pooled images. Columns for
    the paper's recipe and the random-sign control appear when the reports hold them."""
    from revival.intervals import wilson

    svt = all("paper_recipe" in r for r in reports) and bool(reports)
    ctl = all("random_signs" in r.get("controls", {}) for r in reports) and bool(reports)
    cols = [f"erased {s}" for s in STAGES] + (["erased revived (paper's svt)"] if svt else []) \
        + (["erased random-sign control"] if ctl else []) + [f"preserved {s}" for s in STAGES] \
        + ["signs completion", "signs kept", "skill ratio"]
    lines = ["| concept | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]

    def erased_side(r):
        return ([r["accuracy"]["erased"][s] for s in STAGES] + ([r["paper_recipe"]["erased"]] if svt else [])
                + ([r["controls"]["random_signs"]["erased"]] if ctl else []))

    pooled: list[list[float]] = []
    for r in reports:
        vals = (erased_side(r) + [r["accuracy"]["preserved"][s] for s in STAGES]
                + [r["sign_recovery"]["completion"], r["sign_recovery"]["kept"]])
        pooled.append(vals)
        lines.append(f"| {r['concept']} | " + " | ".join(f"{v:.3f}" for v in vals)
                     + f" | {r.get('unlearn', {}).get('skill_ratio', float('nan')):.4g} |")
    if reports:
        n_e = sum(r["images"]["erased"] for r in reports)
        n_p = sum(r["images"]["preserved"] for r in reports)
        n_erased_cols = len(erased_side(reports[0]))
        cells = []
        for j, col in enumerate(zip(*pooled)):
            mean = sum(col) / len(col)
            if j < n_erased_cols + len(STAGES):
                per = [r["images"]["erased" if j < n_erased_cols else "preserved"] for r in reports]
                hits = round(sum(v * n for v, n in zip(col, per)))
                lo, hi = wilson(hits, n_e if j < n_erased_cols else n_p)
                cells.append(f"**{mean:.3f}** [{lo:.2f}, {hi:.2f}]")
            else:
                cells.append(f"**{mean:.3f}**")
        lines.append("| **mean** (95% CI, pooled) | " + " | ".join(cells) + " | |")
    return "\n".join(lines) + "\n"


def relearn_lines(relearn: dict) -> list[str]:
    """Markdown lines of the relearning comparison (nothing when it did not run)."""
    if not relearn:
        return []
    lines = ["", f"Relearning: each model fine-tuned on {relearn['images']} real images of the concept "
                 f"({relearn['images_from']}) for {relearn['steps']} steps, then its erased accuracy:", "",
             "| model | erased accuracy after relearning |", "|---|---:|"]
    for name, label in (("never_learned", "never learned"), ("unlearned", "pruned (ConceptPrune)"),
                        ("robust", "robust erasure")):
        r = relearn[name]
        lines.append(f"| {label} | {r['erased']:.3f} [{r['erased_ci95'][0]:.2f}, {r['erased_ci95'][1]:.2f}] |")
    return lines
