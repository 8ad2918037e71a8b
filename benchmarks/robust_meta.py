"""What the simulated relearning attacker of `--method robust` costs: meta on vs off, same draw.

Trains the robust erasure of one testbed concept twice with the CLI's settings and the same
(research) secret seed, once with `meta=0` (no simulated relearning) and once with the default
weight, one process each side by side, and evaluates each release on 20 held-out images of every
class: erased and preserved accuracy with 95% intervals and the training seconds.

    python benchmarks/robust_meta.py --concept sneaker --secret 4242

Results: benchmarks/results/robust_meta.json (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import estimate, table, write_results  # noqa: E402


def one(concept: str, meta: float, secret: int, per_class: int) -> dict:
    import time
    from dataclasses import replace

    import torch

    from revival.evaluate.classifiers import get_classifier
    from revival.evaluate.evaluate import evaluate_concept
    from revival.evaluate.prompts import HELDOUT_FIRST_SEED, default_prompts
    from revival.intervals import wilson
    from revival.model.denoise import Denoiser
    from revival.model.loader import load_model
    from revival.testbed.text import CLASSES
    from revival.unlearn.erasures import erasure_config, testbed_data
    from revival.unlearn.robust import robust

    torch.set_num_threads(1)
    pipe = load_model("testbed", device="cpu")
    cfg = replace(erasure_config("robust", True), seed=0, secret_seed=secret)
    data = testbed_data(Denoiser(pipe), concept, None, per_class=1000, seed=0)
    pipe.unet.float()
    t = time.perf_counter()
    robust(pipe, data, cfg, None, meta=meta)
    seconds = time.perf_counter() - t
    pipe.unet.eval()
    rows = default_prompts(list(CLASSES), per_class, HELDOUT_FIRST_SEED)
    res = evaluate_concept(pipe, rows, get_classifier("testbed"), concept, steps=None)
    n_e, n_p = per_class, per_class * (len(CLASSES) - 1)
    e, p = res.erased_accuracy, res.preserved_accuracy
    return {"meta": meta, "seconds": seconds, "erased": e, "erased_ci95": wilson(round(e * n_e), n_e),
            "preserved": p, "preserved_ci95": wilson(round(p * n_p), n_p)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="sneaker")
    ap.add_argument("--secret", type=int, default=4242, help="the research secret seed both runs share")
    ap.add_argument("--metas", nargs="+", type=float, default=[0.0, 0.1])
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one(args.concept, args.child, args.secret, args.per_class)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--concept", args.concept, "--secret", str(args.secret),
                               "--per-class", str(args.per_class), "--child", str(m)], stdout=subprocess.PIPE,
                              text=True, env=env) for m in args.metas]
    runs = []
    for pr in procs:
        out, _ = pr.communicate()
        if pr.returncode != 0:
            sys.exit(f"a run failed (exit {pr.returncode})")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    rows = [[r["meta"], estimate(r["erased"], r["erased_ci95"]), estimate(r["preserved"], r["preserved_ci95"]),
             r["seconds"]] for r in runs]
    for r in rows:
        print(r)
    path = write_results("robust_meta", {
        "title": "What robust's simulated relearning attacker costs",
        "about": (f"`--method robust` on testbed concept `{args.concept}` with the CLI's settings, trained with the "
                  f"simulated relearning weight meta at each value below and the same research secret seed "
                  f"({args.secret}), one process each side by side on one thread; evaluated on {args.per_class} "
                  "held-out images of every class (seeds from 1000). One secret draw: a figure of this draw, not of "
                  "every draw."),
        "runs": runs,
        "tables": [table("meta on vs off", ["meta", "erased [95%]", "preserved [95%]", "training s"], rows,
                         formats=["", ".3f", ".3f", ".0f"])]}, argv=argv)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
