"""The publisher's audit of the shipped robust releases, run as a publisher runs it.

For every concept with a shipped `--method robust` release (src/revival/testbed/weights/robust/)
and a shipped never-learned model, `revival audit --threat both` with the audit's default
evidence (60 images of the concept, up to 240 while only intervals straddle the limit, 4 of every
other class, every attacker of the ladder, the default relearning budgets), exactly as the CLI
runs it. Records the verdicts (weights only, relearning, both), each attacker's excess beyond the
same attack on the never-learned model, the relearning curve beside the never-learned model's,
the images it took and the seconds.

    python benchmarks/audit_robust.py                    # every shipped robust release
    python benchmarks/audit_robust.py --concepts sneaker --threads 1

Results: benchmarks/results/audit_robust.json (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_results  # noqa: E402


def _ci(x, ci):
    return {"value": x, "ci": ci}


def audit_one(concept: str, release: Path, threads: int, seed: int) -> dict:
    from revival.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit"
        t0 = time.perf_counter()
        rc = main(["--threads", str(threads), "audit", "--release", str(release), "--original", "testbed",
                   "--concept", concept, "--threat", "both", "--seed", str(seed), "-o", str(out), "--quiet"])
        seconds = time.perf_counter() - t0
        d = json.loads((out / "audit.json").read_text())
    return {"concept": concept, "exit": rc, "seconds": seconds, "audit": d}


def main(argv=None) -> None:
    from revival.story.demo_holds import shipped_robust
    from revival.audit.never_learned import shipped_never_learned

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", nargs="+", default=None, help="default: every concept with a shipped robust release")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from revival.testbed.text import CLASSES

    concepts = args.concepts or [c for c in CLASSES if shipped_robust(c) is not None]
    runs = []
    for c in concepts:
        release = shipped_robust(c)
        if release is None or shipped_never_learned(c) is None:
            raise SystemExit(f"no shipped robust release and never-learned model of {c!r}.")
        r = audit_one(c, release, args.threads, args.seed)
        d = r["audit"]
        print(f"{c}: verdict {d['verdict']} (weights {d['weights_verdict']['verdict']}, relearning "
              f"{d['relearn_verdict']['verdict']}), exit {r['exit']}, {r['seconds']:.0f} s", flush=True)
        runs.append(r)

    verdicts, ladder, curve = [], [], []
    for r in runs:
        d = r["audit"]
        rel, nl = d["release"], d["never_learned"]
        n_concept = (d["original"].get("erased_hits") or [None, None])[1]
        verdicts.append([r["concept"], d["verdict"], d["weights_verdict"]["verdict"], d["relearn_verdict"]["verdict"],
                         r["exit"], _ci(rel.get("erased"), rel.get("erased_ci95")), nl.get("erased"),
                         _ci(rel.get("preserved"), rel.get("preserved_ci95")), d["original"].get("preserved"),
                         n_concept, r["seconds"]])
        for name, a in d["attacks"].items():
            ladder.append([r["concept"], name, a.get("status"), a.get("erased"), a.get("never_learned_erased"),
                           _ci(a.get("excess"), a.get("excess_ci95"))])
        for b in d["relearn"]["budgets"]:
            curve.append([r["concept"], f"{b['images']}x{b['steps']}", b.get("release"), b.get("never_learned_erased"),
                          _ci(b.get("excess"), b.get("excess_ci95")), b.get("release_preserved")])
    limit = runs[0]["audit"]["limit"] if runs else None
    data = {
        "title": "The publisher's audit of the shipped robust releases",
        "about": ("`revival audit --release <shipped robust release> --original testbed --concept C --threat both` "
                  "with the audit's defaults (60 images of the concept, up to 240 while only intervals straddle the "
                  f"limit {limit}; 4 of every other class; every attacker; the default relearning budgets), "
                  "every gain read beyond the same attack on the shipped never-learned model with the same images, "
                  "steps and seed. Pass: every 95% upper bound at or below the limit."),
        "runs": [{"concept": r["concept"], "exit": r["exit"], "seconds": r["seconds"], "verdict": r["audit"]["verdict"],
                  "reasons": r["audit"]["reasons"]} for r in runs],
        "tables": [
            table("verdicts", ["concept", "verdict (both)", "weights only", "relearning", "exit", "erased [95%]",
                               "never-learned erased", "preserved [95%]", "original preserved",
                               "images of the concept", "audit s"], verdicts,
                  formats=["", "", "", "", "", ".2f", ".3f", ".2f", ".2f", "", ".0f"]),
            table("weight-only ladder beside the never-learned model", ["concept", "attacker", "status", "erased",
                  "never-learned erased", "excess [95%]"], ladder, formats=["", "", "", ".3f", ".3f", ".3f"]),
            table("relearning beside the never-learned model", ["concept", "K x steps", "release erased",
                  "never-learned erased", "excess [95%]", "release preserved after"], curve,
                  formats=["", "", ".3f", ".3f", ".3f", ".2f"],
                  note="relearning: fine-tuning on K real images of the concept (Fashion-MNIST's test split) for the "
                       "given steps; excess = the relearned release's erased accuracy - the relearned never-learned "
                       "model's, paired 95% interval over the same evaluation images."),
        ],
    }
    path = write_results("audit_robust", data, argv=argv)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
