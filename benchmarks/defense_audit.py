"""Every attacker against every defense, on the testbed, for every concept: the audit table.

Per concept: ConceptPrune (skill ratio 0.05, 10 steps, the demo's settings) gives the unlearned
model; each release (the unlearned model itself = "zeros", and the unlearned model defended by
gaussian, decoy and resample) is audited by `revival.audit.audit_states` with every attacker
(zeros, residual, method-aware, columns, reprune), against the original for localisation.
Evaluation: held-out captions (the classes' other synonyms in templates ConceptPrune's
statistics do not use), seeds from 1000; `--erased` images of the concept, `--preserved` of
every other class.

Targets (issue 10): the zeros release fails; the default defense passes for every concept
(every gain <= 0.10, erased <= unlearned + 0.05, preserved >= unlearned - 0.02).

    python benchmarks/defense_audit.py                       # all 10 concepts (about 30 min, 1 thread)
    python benchmarks/defense_audit.py --concepts sneaker coat --defenses resample
    python benchmarks/defense_audit.py --json out/defense_audit.json   # results kept per concept; reruns resume
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from revival.attack.attackers import ATTACKERS
from revival.audit import AuditConfig, audit_states, heldout_prompts
from revival.defense import DEFAULT_DEFENSE, DEFENSES, apply_defense
from revival.io import write_json

RELEASES = ("zeros", *DEFENSES)


def run_concept(pipe, clf, concept: str, defenses, args) -> dict:
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, conceptprune

    from revival.unlearn.conceptprune import concept_statistics
    from revival.unlearn.least_damage import least_damage, testbed_erased_fn

    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    prompts = concept_prompts(concept, pipe.classes)
    cp_cfg = ConceptPruneConfig(skill_ratio=args.skill_ratio, steps=10)
    stats = concept_statistics(pipe, *prompts, cp_cfg)
    ratio = args.skill_ratio
    if args.target_erasure is not None:   # the publisher's least-damage ratio (validation seeds from 2000)
        search = least_damage(stats, cp_cfg, testbed_erased_fn(pipe, concept, args.search_seeds, cp_cfg),
                              args.target_erasure)
        ratio = search.skill_ratio
    masks, _ = stats.masks(ConceptPruneConfig(skill_ratio=ratio, steps=10))
    layers = sorted(masks)
    unlearned = {**original, **apply_masks(original, masks)}
    rows = heldout_prompts(pipe.classes, concept, args.erased, args.preserved)
    cfg = AuditConfig(skill_ratio=ratio, steps=10)   # the attacker is told the ratio actually used
    out = {"skill_ratio": ratio}
    for d in defenses:
        t0 = time.perf_counter()
        if d == "zeros":
            release, cost = unlearned, {}
        else:
            method, opts = parse_defense(d)
            upd, res = apply_defense(unlearned, layers, method, 0, **opts)
            release, cost = {**unlearned, **upd}, res.to_dict()["totals"]
        result, _ = audit_states(pipe, original, release, layers, concept, rows, clf, cfg,
                                 original=original, prompts=prompts)
        out[d] = {**result.to_dict(), "defense_totals": cost, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  {concept:10s} {d:9s} (ratio {ratio:.4f}) verdict {result.verdict}  release erased {result.release['erased']:.2f} "
              f"preserved {result.release['preserved']:.2f}  worst gain {result.worst[1]:+.2f} ({result.worst[0]})  "
              f"[{out[d]['seconds']:.0f} s]", flush=True)
    return out


def parse_defense(spec: str) -> tuple[str, dict]:
    """"resample:column_share=0.4,hot=column" -> ("resample", {"column_share": 0.4, "hot": "column"})."""
    method, _, rest = spec.partition(":")
    opts = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        try:
            opts[k] = float(v)
        except ValueError:
            opts[k] = {"true": True, "false": False}.get(v.lower(), v)
    return method, opts


def table(results: dict, defenses) -> str:
    """Markdown: mean gain (max over concepts) per attacker x release, verdicts, cost, localisation."""
    concepts = list(results)
    lines = [f"{len(concepts)} concepts: {', '.join(concepts)}", "",
             "erased-accuracy gain of each attacker (mean over concepts, max in brackets):", "",
             "| attacker | " + " | ".join(defenses) + " |", "|---|" + "---|" * len(defenses)]
    for a in ATTACKERS:
        cells = []
        for d in defenses:
            g = [results[c][d]["attacks"][a]["gain"] for c in concepts if results[c][d]["attacks"][a].get("gain") is not None]
            cells.append(f"{statistics.mean(g):+.2f} ({max(g):+.2f})" if g else "n/a")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("| **verdict: pass / concepts** | " + " | ".join(
        f"{sum(results[c][d]['verdict'] == 'pass' for c in concepts)} / {len(concepts)}" for d in defenses) + " |")
    lines += ["", "release accuracy vs the unlearned (zeros) model, mean over concepts (95% Wilson intervals pooled):", "",
              "| release | erased | preserved | erased - unlearned (max) | preserved - unlearned (min) |", "|---|---|---|---|---|"]
    for d in defenses:
        e = [results[c][d]["release"]["erased"] for c in concepts]
        p = [results[c][d]["release"]["preserved"] for c in concepts]
        de = [results[c][d]["release"]["erased"] - results[c]["zeros"]["release"]["erased"] for c in concepts] \
            if "zeros" in defenses else [float("nan")]
        dp = [results[c][d]["release"]["preserved"] - results[c]["zeros"]["release"]["preserved"] for c in concepts] \
            if "zeros" in defenses else [float("nan")]
        eh = [sum(results[c][d]["release"]["erased_hits"][i] for c in concepts) for i in (0, 1)]
        ph = [sum(results[c][d]["release"]["preserved_hits"][i] for c in concepts) for i in (0, 1)]
        from revival.intervals import wilson

        ce, cp = wilson(*eh), wilson(*ph)
        lines.append(f"| {d} | {statistics.mean(e):.3f} [{ce[0]:.2f}, {ce[1]:.2f}] | {statistics.mean(p):.3f} "
                     f"[{cp[0]:.2f}, {cp[1]:.2f}] | {statistics.mean(de):+.3f} ({max(de):+.2f}) | "
                     f"{statistics.mean(dp):+.3f} ({min(dp):+.2f}) |")
    if "zeros" in defenses:
        lines += ["", "per concept, each defended release against the issue's three conditions (gain <= 0.10 for every "
                  "attacker, erased <= unlearned + 0.05, preserved >= unlearned - 0.02):", "",
                  "| concept | ratio | unlearned erased / preserved | " + " | ".join(d for d in defenses if d != "zeros")
                  + " |", "|---|---|---|" + "---|" * (len(defenses) - 1)]
        met = {d: 0 for d in defenses}
        for c in concepts:
            z = results[c]["zeros"]["release"]
            cells = []
            for d in defenses:
                if d == "zeros":
                    continue
                r = results[c][d]
                gain = max((a["gain"] for a in r["attacks"].values() if a.get("gain") is not None), default=0.0)
                ok = (gain <= 0.10 and r["release"]["erased"] <= z["erased"] + 0.05
                      and r["release"]["preserved"] >= z["preserved"] - 0.02)
                met[d] += ok
                cells.append(f"{'met' if ok else 'MISSED'}: gain {gain:+.2f}, "
                             f"{r['release']['erased']:.2f} / {r['release']['preserved']:.2f}")
            ratio = results[c].get("skill_ratio")
            lines.append(f"| {c} | {ratio if ratio is None else f'{ratio:.4f}'} | {z['erased']:.2f} / {z['preserved']:.2f} | "
                         + " | ".join(cells) + " |")
        lines.append("| **all three met** | | | " + " | ".join(f"{met[d]} / {len(concepts)}" for d in defenses
                                                          if d != "zeros") + " |")
    lines += ["", "localisation against each release (mean over concepts): entry AUC / column AUC", "",
              "| attacker | " + " | ".join(defenses) + " |", "|---|" + "---|" * len(defenses)]
    for a in ATTACKERS:
        cells = []
        for d in defenses:
            loc = [results[c][d]["attacks"][a].get("localisation") for c in concepts]
            loc = [x for x in loc if x]
            cells.append(f"{statistics.mean(x['entry_auc'] for x in loc):.2f} / "
                         f"{statistics.mean(x['column_auc'] for x in loc):.2f}" if loc else "n/a")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from revival.evaluate.classifiers import get_classifier
    from revival.testbed import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concepts", nargs="*", default=None)
    ap.add_argument("--defenses", nargs="*", default=list(RELEASES),
                    help=f"releases among {', '.join(RELEASES)}; options as resample:column_share=0.4,hot=column")
    ap.add_argument("--erased", type=int, default=60, help="evaluation images of the concept")
    ap.add_argument("--preserved", type=int, default=5, help="evaluation images of every other class")
    ap.add_argument("--skill-ratio", type=float, default=0.05,
                    help="ConceptPrune's skill ratio (without --target-erasure)")
    ap.add_argument("--target-erasure", type=float, default=None,
                    help="choose each concept's ratio as the demo does: the least that erases to this accuracy")
    ap.add_argument("--search-seeds", type=int, default=60, help="validation images per probe of that search")
    ap.add_argument("--json", type=Path, default=None, help="keep results here (per concept; resumes)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    clf = get_classifier("testbed")
    concepts = args.concepts or list(pipe.classes)
    results = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    t0 = time.time()
    for c in concepts:
        if c in results and all(d in results[c] for d in args.defenses):
            continue
        results[c] = {**results.get(c, {}), **run_concept(pipe, clf, c, args.defenses, args)}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(results, args.json)
    done = {c: results[c] for c in concepts if c in results}
    print()
    print(table(done, list(args.defenses)))
    print(f"\ndefault defense: {DEFAULT_DEFENSE}; {args.erased} erased + {args.preserved} x 9 preserved images per "
          f"model; ({time.time() - t0:.0f} s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
