"""Testbed quality: classifier accuracy of generated images per class, and generation speed.

    .venv/bin/python benchmarks/testbed_quality.py [--unet DIR] [--seeds 50] [--steps S] [--guidance G] [--threads 1]

Targets (issue #3): mean accuracy >= 0.85 over the 10 classes, every class >= 0.60, with >= 50
seeds per class at the default steps and guidance; 100 images in <= 30 s on the CPU.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", default=None)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=1000, help="seeds unseen by the tests")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(per_class=accs, mean=mean, seconds=sec, images=len(rows), steps=steps,
                           guidance=guidance, threads=args.threads), f, indent=2)


if __name__ == "__main__":
    main()
