"""What the simulated relearning attacker of `--method robust` costs, and what wins it back.

Trains the robust erasure of one testbed concept once per variant (keyword settings of
`revival.unlearn.robust.robust`, e.g. `meta=0` or `distill=1,meta_stop=0.8`; `default` is the
CLI's) with the CLI's settings and the same (research) secret seed, one process each side by
side, and evaluates each release on 20 held-out images of every class (erased and preserved
accuracy with 95% intervals) and after relearning (K images of the concept from the test split,
S steps: erased accuracy on the same held-out prompts), with the training seconds.

    python benchmarks/robust_meta.py --concept sneaker --secret 4242 --variants default meta=0

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


RELEARN = ((1, 20), (4, 20), (16, 50))


def parse_variant(text: str) -> dict:
    """`default` -> {}; `meta=0,distill=1` -> {"meta": 0.0, "distill": True}."""
    if text == "default":
        return {}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key] = bool(int(value)) if key in ("distill", "cosine") else float(value)
    return out


def one(concept: str, variant: str, secret: int, per_class: int) -> dict:
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
    from revival.attack.attackers.relearn import RelearnBudget, relearn_images, relearn_state

    torch.set_num_threads(1)
    pipe = load_model("testbed", device="cpu")
    cfg = replace(erasure_config("robust", True), seed=0, secret_seed=secret)
    data = testbed_data(Denoiser(pipe), concept, None, per_class=1000, seed=0)
    pipe.unet.float()
    t = time.perf_counter()
    facts = robust(pipe, data, cfg, None, **parse_variant(variant))
    seconds = time.perf_counter() - t
    pipe.unet.eval()
    judge = get_classifier("testbed")
    rows = default_prompts(list(CLASSES), per_class, HELDOUT_FIRST_SEED)
    res = evaluate_concept(pipe, rows, judge, concept, steps=None)
    n_e, n_p = per_class, per_class * (len(CLASSES) - 1)
    e, p = res.erased_accuracy, res.preserved_accuracy
    release = {n: t.detach().clone() for n, t in pipe.unet.state_dict().items()}
    images = relearn_images(True, concept, max(k for k, _ in RELEARN), seed=0)
    relearned = []
    for k, steps in RELEARN:
        state = relearn_state(pipe, release, concept, RelearnBudget(k, steps), images=images)
        pipe.unet.load_state_dict(state)
        r = evaluate_concept(pipe, default_prompts([concept], per_class, HELDOUT_FIRST_SEED), judge, concept,
                             steps=None).erased_accuracy
        relearned.append({"images": k, "steps": steps, "erased": r, "erased_ci95": wilson(round(r * n_e), n_e)})
        pipe.unet.load_state_dict(release)
    return {"variant": variant, "settings": {k: facts[k] for k in ("meta", "meta_stop", "distill", "cosine", "ema",
                                                                     "reset")},
            "seconds": seconds, "erased": e, "erased_ci95": wilson(round(e * n_e), n_e),
            "preserved": p, "preserved_ci95": wilson(round(p * n_p), n_p), "relearned": relearned}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="sneaker")
    ap.add_argument("--secret", type=int, default=4242, help="the research secret seed both runs share")
    ap.add_argument("--variants", nargs="+", default=["meta=0", "default"],
                    help="robust settings per run: `default`, or key=value pairs joined by commas")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one(args.concept, args.child, args.secret, args.per_class)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--concept", args.concept, "--secret", str(args.secret),
                               "--per-class", str(args.per_class), "--child", v], stdout=subprocess.PIPE,
                              text=True, env=env) for v in args.variants]
    runs = []
    for pr in procs:
        out, _ = pr.communicate()
        if pr.returncode != 0:
            sys.exit(f"a run failed (exit {pr.returncode})")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    rows = [[r["variant"], estimate(r["erased"], r["erased_ci95"]), estimate(r["preserved"], r["preserved_ci95"]),
             *[estimate(b["erased"], b["erased_ci95"]) for b in r["relearned"]], r["seconds"]] for r in runs]
    for r in rows:
        print(r)
    path = write_results("robust_meta", {
        "title": "What robust's simulated relearning attacker costs, and what wins it back",
        "about": (f"`--method robust` on testbed concept `{args.concept}` with the CLI's settings, trained once per "
                  f"variant below (`default`: the CLI's; otherwise the settings named) with the same research secret seed "
                  f"({args.secret}), one process each side by side on one thread; evaluated on {args.per_class} "
                  "held-out images of every class (seeds from 1000), then relearned (K test-split images of the concept, "
                  "S steps, lr 3e-4) and evaluated on the concept's same held-out prompts. One secret draw: a figure "
                  "of this draw, not of every draw."),
        "runs": runs,
        "tables": [table("robust variants", ["variant", "erased [95%]", "preserved [95%]",
                                             *[f"relearned K={k}, {s} steps" for k, s in RELEARN], "training s"], rows,
                         formats=["", ".3f", ".3f", *[".2f"] * len(RELEARN), ".0f"])]}, argv=argv)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
