"""Testbed quality: classifier accuracy of generated images per class, and generation speed.

    .venv/bin/python benchmarks/testbed_quality.py [--unet DIR] [--seeds 50] [--steps S] [--guidance G] [--threads 1]

Targets (issue #3): mean accuracy >= 0.85 over the 10 classes, every class >= 0.60, with >= 50
seeds per class at the default steps and guidance; 100 images in <= 30 s on the CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", default=None)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=1000, help="seeds unseen by the tests")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results-dir", default=None, help="where the results file goes (default benchmarks/results/)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from revival.evaluate import default_prompts, evaluate_concept, get_classifier
    from revival.testbed import CLASSES, load_pipeline

    pipe = load_pipeline(args.unet)
    clf = get_classifier("testbed")
    rows = default_prompts(CLASSES, args.seeds, args.first_seed)
    pipe(["warm-up"] * 2, [0, 1], steps=2)  # text encoder load + first-call costs out of the timing
    pipe.encode([r.prompt for r in rows])
    t0 = time.time()
    res = evaluate_concept(pipe, rows, clf, CLASSES[0], steps=args.steps, guidance=args.guidance)
    sec = time.time() - t0
    accs = {c: s.accuracy for c, s in res.per_class.items()}
    mean = sum(accs.values()) / len(accs)
    steps = args.steps or pipe.default_steps
    guidance = args.guidance if args.guidance is not None else pipe.default_guidance
    print(f"| class | images | accuracy |\n|---|---:|---:|")
    for c, s in res.per_class.items():
        print(f"| {c} | {s.images} | {s.accuracy:.3f} |")
    print(f"\nmean accuracy {mean:.3f}, min {min(accs.values()):.3f}; {len(rows)} images, "
          f"{steps} DDIM steps, guidance {guidance}, {args.threads} thread(s): {sec:.1f}s "
          f"({100 * sec / len(rows):.1f}s per 100 images incl. classification)")
    confusion = {}
    for r, p in zip(rows, res.predictions):
        if p != r.cls:
            confusion[f"{r.cls}->{p}"] = confusion.get(f"{r.cls}->{p}", 0) + 1
    print("top confusions:", sorted(confusion.items(), key=lambda kv: -kv[1])[:8])
    from results import table, write_results

    path = write_results("testbed_quality", {
        "title": "The testbed's image quality and speed",
        "about": (f"The testbed classifier's accuracy on {args.seeds} generated images a class (held-out captions, seeds "
                  f"from {args.first_seed}), {steps} DDIM steps, guidance {guidance}, {args.threads} torch thread(s); "
                  "the time covers generation and classification after a warm-up."),
        "per_class": accs, "mean": mean, "min": min(accs.values()), "seconds": sec, "images": len(rows),
        "seconds_per_100": 100 * sec / len(rows), "confusions": dict(sorted(confusion.items(), key=lambda kv: -kv[1])[:8]),
        "tables": [table("accuracy per class", ["class", "images", "accuracy"],
                         [[c, s.images, s.accuracy] for c, s in res.per_class.items()] + [["mean", len(rows), mean]],
                         formats=["", "", ".3f"],
                         note=f"{sec:.1f} s for {len(rows)} images: {100 * sec / len(rows):.1f} s per 100.")]},
        folder=args.results_dir)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
