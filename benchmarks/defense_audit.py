"""Every attacker against every defense, on the testbed, for every concept: the audit table.

Per concept: a pruning method (--method: ConceptPrune on ff.net.2, the paper's; ConceptPrune on
ff.net.0.proj; CAD-like in both feed-forward linears) gives the unlearned model, at the
least-damage ratio (--target-erasure, as `revival demo` chooses it) or a fixed one; each
release (the unlearned model itself = "zeros", and the unlearned model defended by each
--defenses entry, the default defense by default, its randomness from the OS as a publisher
runs it) is audited by `revival.audit.run.audit_states`: every attacker of the ladder on every layer
the release changed, the original's, the release's and every attacked model's images judged on
held-out captions and seeds from 1000; more images of the concept while an interval straddles
the limit (up to --max-erased). The verdict is pass / fail / inconclusive (`revival.audit.verdict`).

Targets: every zeros release fails with certainty; every default-defended release passes with
certainty (no inconclusive); the defense's preserved cost per concept (mean toward <= 0.02).

    python benchmarks/defense_audit.py --target-erasure 0.2                     # 10 concepts, ff.net.2
    python benchmarks/defense_audit.py --method conceptprune-proj --target-erasure 0.2
    python benchmarks/defense_audit.py --method cad --concepts sneaker coat
    python benchmarks/defense_audit.py --json out/da.json     # results kept per concept; reruns resume

The results go to benchmarks/results/defense_audit_<method>.json (with commit, command, date and
machine) through benchmarks/results.py; a --target-erasure other than 0.2 writes its own file
(defense_audit_<method>_target<T>.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from revival.attack.attackers import ATTACKERS
from revival.audit.run import AuditConfig, audit_states, heldout_prompts, more_heldout_rows
from revival.defense import DEFAULT_DEFENSE, DEFENSES, apply_defense
from revival.io import write_json

RELEASES = ("zeros", *DEFENSES)
# method label -> (revival method, modules, fixed ratio when no least-damage search applies)
METHODS = {"conceptprune": ("conceptprune", None, 0.05),
           "conceptprune-proj": ("conceptprune", r"transformer_blocks\.\d+\.ff\.net\.0\.proj$", 0.08),
           "cad": ("cad", None, 0.15)}


def unlearned_model(pipe, concept: str, args):
    """(unlearned state, pruned layers, ratio) of `args.method` for `concept`."""
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, concept_statistics
    from revival.unlearn.least_damage import least_damage
    from revival.unlearn.run import testbed_erased_fn

    method, modules, fixed = METHODS[args.method]
    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    prompts = concept_prompts(concept, pipe.classes)
    if method == "conceptprune":
        kw = {"modules": modules} if modules else {}
        cfg = ConceptPruneConfig(skill_ratio=args.skill_ratio or fixed, steps=10, **kw)
        stats = concept_statistics(pipe, *prompts, cfg)
        ratio = cfg.skill_ratio
        if args.target_erasure is not None:   # the publisher's least-damage ratio (validation seeds from 2000)
            ratio = least_damage(stats, cfg, testbed_erased_fn(pipe, concept, args.search_seeds, cfg),
                                 args.target_erasure).skill_ratio
        masks, _ = stats.masks(ConceptPruneConfig(skill_ratio=ratio, steps=10, **kw))
    else:
        from revival.unlearn.methods import make_masks

        ratio = args.skill_ratio or fixed
        masks, _ = make_masks(method, pipe, *prompts, ratio=ratio)
        pipe.unet.load_state_dict(original)
    return {**original, **apply_masks(original, masks)}, sorted(masks), ratio


def run_concept(pipe, clf, concept: str, defenses, args) -> dict:
    from revival.unlearn.conceptprune import concept_prompts

    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    prompts = concept_prompts(concept, pipe.classes)
    unlearned, layers, ratio = unlearned_model(pipe, concept, args)
    rows = heldout_prompts(pipe.classes, concept, args.erased, args.preserved)
    cfg = AuditConfig(skill_ratio=min(ratio, 1.0), steps=10, erased_images=args.erased, preserved_per_class=args.preserved,
                      max_erased_images=max(args.max_erased, args.erased))
    out = {"skill_ratio": ratio, "pruned_layers": len(layers)}
    for d in defenses:
        t0 = time.perf_counter()
        if d == "zeros":
            release, cost = unlearned, {}
        else:
            method, opts = parse_defense(d)
            upd, res = apply_defense(unlearned, layers, method, None, **opts)   # secret randomness, as published
            release, cost = {**unlearned, **upd}, res.to_dict()["totals"]
        result, _ = audit_states(pipe, original, release, None, concept, rows, clf, cfg, prompts=prompts,
                                 more_rows=more_heldout_rows(concept, cfg.first_seed))
        out[d] = {**result.to_dict(), "defense_totals": cost, "seconds": round(time.perf_counter() - t0, 1)}
        lg = result.largest_gain
        print(f"  {concept:10s} {d:9s} (ratio {ratio:.4f}) verdict {result.verdict:12s} release erased "
              f"{result.release['erased']:.2f} preserved {result.release['preserved']:.2f}  largest gain "
              f"{lg['gain'] if lg['gain'] is not None else float('nan'):+.2f} {lg['gain_ci95']} ({lg['attacker']}), "
              f"{result.settings['erased_images']} images  [{out[d]['seconds']:.0f} s]", flush=True)
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


def _g(r: dict) -> str:
    lg = r["largest_gain"]
    if lg["gain"] is None:
        return "n/a"
    ci = lg["gain_ci95"]
    return f"{lg['gain']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] {lg['attacker']}" if ci else f"{lg['gain']:+.2f} {lg['attacker']}"


def summary(results: dict, defenses) -> dict:
    """The targets' figures: verdict counts per release, the defense's cost per concept and its mean."""
    concepts = list(results)
    out = {"concepts": concepts, "verdicts": {}, "cost": {}}
    for d in defenses:
        out["verdicts"][d] = {v: sum(results[c][d]["verdict"] == v for c in concepts) for v in ("pass", "fail", "inconclusive")}
        if d != "zeros" and "zeros" in defenses:
            per = {c: {"preserved": round(results[c][d]["release"]["preserved"] - results[c]["zeros"]["release"]["preserved"], 4),
                       "erased": round(results[c][d]["release"]["erased"] - results[c]["zeros"]["release"]["erased"], 4)}
                   for c in concepts}
            out["cost"][d] = {"per_concept": per,
                              "mean_preserved": round(statistics.mean(v["preserved"] for v in per.values()), 4),
                              "mean_erased": round(statistics.mean(v["erased"] for v in per.values()), 4)}
    return out


def table(results: dict, defenses) -> str:
    """Markdown: per concept, each release's verdict and largest gain; the cost; the localisation."""
    concepts = list(results)
    summ = summary(results, defenses)
    lines = ["| concept | ratio | " + " | ".join(f"{d}: verdict, largest gain [95%]" for d in defenses)
             + " | " + " | ".join(f"{d}: preserved / erased vs zeros" for d in defenses if d != "zeros") + " |",
             "|---|---|" + "---|" * (len(defenses) + len([d for d in defenses if d != "zeros"]))]
    for c in concepts:
        cells = [f"{results[c][d]['verdict']}, {_g(results[c][d])}" for d in defenses]
        cost = [f"{summ['cost'][d]['per_concept'][c]['preserved']:+.3f} / {summ['cost'][d]['per_concept'][c]['erased']:+.3f}"
                for d in defenses if d in summ["cost"]]
        lines.append(f"| {c} | {results[c]['skill_ratio']:.4f} | " + " | ".join(cells + cost) + " |")
    lines.append("| **verdicts** | | " + " | ".join(
        ", ".join(f"{k} {v}" for k, v in summ["verdicts"][d].items()) for d in defenses)
        + " | " + " | ".join(f"mean {summ['cost'][d]['mean_preserved']:+.3f} / {summ['cost'][d]['mean_erased']:+.3f}"
                             for d in defenses if d in summ["cost"]) + " |")
    lines += ["", "localisation against each release (mean over concepts): entry AUC / column AUC", "",
              "| attacker | " + " | ".join(defenses) + " |", "|---|" + "---|" * len(defenses)]
    for a in ATTACKERS:
        cells = []
        for d in defenses:
            loc = [(results[c][d]["attacks"].get(a) or {}).get("localisation") for c in concepts]
            loc = [x for x in loc if x]
            cells.append(f"{statistics.mean(x['entry_auc'] for x in loc):.2f} / "
                         f"{statistics.mean(x['column_auc'] for x in loc):.2f}" if loc else "n/a")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_defense_results(args, done: dict, argv, measured_by: list[str] | None = None) -> Path:
    """benchmarks/results/defense_audit_<method>.json: the per-concept table and the summary
    (rendered into docs/results.md by benchmarks/render_docs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import estimate, table, write_results

    defenses = [d for d in ("zeros", *DEFENSES) if all(d in done[c] for c in done)]
    summ = summary(done, defenses)
    cols = ["concept", "ratio"] + [f"{d}: verdict" for d in defenses] + [f"{d}: largest gain [95%]" for d in defenses] \
        + [f"{d}: by" for d in defenses] + [f"{d}: preserved - zeros" for d in defenses if d != "zeros"]
    rows = []
    for c in done:
        lg = {d: done[c][d]["largest_gain"] for d in defenses}
        rows.append([c, round(done[c]["skill_ratio"], 4)] + [done[c][d]["verdict"] for d in defenses]
                    + [estimate(lg[d]["gain"], lg[d]["gain_ci95"]) if lg[d]["gain_ci95"] else lg[d]["gain"] for d in defenses]
                    + [lg[d]["attacker"] for d in defenses]
                    + [summ["cost"][d]["per_concept"][c]["preserved"] for d in defenses if d in summ["cost"]])
    tables = [table(f"Every attacker against each release ({args.method}, least-damage ratio)", cols, rows,
                    note="verdict: pass / fail / inconclusive (revival.audit.verdict); largest gain: attacked erased accuracy - "
                         "release erased accuracy, with its 95% paired interval; preserved - zeros: the defense's cost.")]
    label = args.method + (f", target erasure {args.target_erasure}" if args.target_erasure not in (None, 0.2) else "")
    data = {"title": f"Audit of zeros and defended releases: {label}", "page": "results",
            "about": f"{len(done)} testbed concept(s): {', '.join(done)}; held-out captions, seeds from 1000; "
                     f"{args.erased} images of the concept (up to {args.max_erased} while inconclusive), {args.preserved} of "
                     "every other class; each release audited by every attacker of the ladder.",
            "tables": tables, "summary": summ, "measured_by": measured_by or [" ".join(argv)]}
    suffix = f"_target{args.target_erasure:g}".replace(".", "p") if args.target_erasure not in (None, 0.2) else ""
    return write_results(f"defense_audit_{args.method}{suffix}", data, argv=argv)


def main() -> None:
    from revival.evaluate.classifiers import get_classifier
    from revival.testbed import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concepts", nargs="*", default=None)
    ap.add_argument("--method", default="conceptprune", choices=list(METHODS))
    ap.add_argument("--defenses", nargs="*", default=["zeros", DEFAULT_DEFENSE],
                    help=f"releases among {', '.join(RELEASES)}; options as resample:column_share=0.4,hot=column")
    ap.add_argument("--erased", type=int, default=60, help="evaluation images of the concept")
    ap.add_argument("--preserved", type=int, default=5, help="evaluation images of every other class")
    ap.add_argument("--max-erased", type=int, default=240, help="most images of the concept while inconclusive")
    ap.add_argument("--skill-ratio", type=float, default=None,
                    help="the method's ratio (without --target-erasure; default: the method's own)")
    ap.add_argument("--target-erasure", type=float, default=None,
                    help="ConceptPrune: each concept's ratio as the demo chooses it, the least that erases to this")
    ap.add_argument("--search-seeds", type=int, default=60, help="validation images per probe of that search")
    ap.add_argument("--json", type=Path, default=None, help="keep results here (per concept; resumes)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from-json", type=Path, default=None,
                    help="write the results file from a --json kept by earlier runs (no new measurement)")
    ap.add_argument("--measured-by", nargs="*", default=None, help="with --from-json: the commands that measured it")
    args = ap.parse_args()
    if args.from_json is not None:
        done = json.loads(args.from_json.read_text())
        done = {c: done[c] for c in (args.concepts or done)}
        print(f"wrote {write_defense_results(args, done, sys.argv, args.measured_by)}")
        return
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    clf = get_classifier("testbed")
    concepts = args.concepts or list(pipe.classes)
    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    results = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    t0 = time.time()
    for c in concepts:
        if c in results and all(d in results[c] for d in args.defenses):
            continue
        results[c] = {**results.get(c, {}), **run_concept(pipe, clf, c, args.defenses, args)}
        pipe.unet.load_state_dict(original)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(results, args.json)
    done = {c: results[c] for c in concepts if c in results}
    print()
    print(table(done, list(args.defenses)))
    print(f"\nmethod {args.method}; default defense: {DEFAULT_DEFENSE}; {args.erased} (up to {args.max_erased}) erased + "
          f"{args.preserved} x 9 preserved images per model; ({time.time() - t0:.0f} s, {args.threads} thread(s))")
    print(f"wrote {write_defense_results(args, done, sys.argv)}")


if __name__ == "__main__":
    main()
