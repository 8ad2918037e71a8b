"""Every testbed concept through the demo's stages: erase -> revive -> defend -> attack again.

Prints (and writes with --out) a Markdown table in the paper's shape: concept x stage, erased
and preserved accuracy, sign recovery, plus the mean over concepts.

    .venv/bin/python benchmarks/testbed_table.py [--seeds-per-class 10] [--out out/testbed_table]
                                                 [--concepts sneaker,bag] [--magnitude M] [--keep K]

Each concept's demo report lands in OUT/<concept>/; the table in OUT/table.md.

    .venv/bin/python benchmarks/testbed_table.py --sweep [--concepts sneaker] [--keeps 0.2,0.4,0.6,0.8,1.0]

measures instead every attack magnitude rule x keep ratio on the unlearned model(s): erased and
preserved accuracy after the attack, and sign recovery (OUT/sweep.md).

Both also write benchmarks/results/testbed_table.json (testbed_table_sweep.json) through
benchmarks/results.py unless --no-save; `python benchmarks/render_docs.py` renders them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import estimate, table, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds-per-class", type=int, default=12)
    ap.add_argument("--no-controls", action="store_true", help="skip the sign controls")
    ap.add_argument("--no-paper-recipe", action="store_true", help="skip the paper's recipe (svt) column")
    ap.add_argument("--target-erasure", type=float, default=None, help="least-damage target (default: the demo's)")
    ap.add_argument("--out", type=Path, default=Path("out/testbed_table"))
    ap.add_argument("--concepts", default=None, help="comma-separated subset (default: all 10 classes)")
    ap.add_argument("--skill-ratio", type=float, default=None)
    ap.add_argument("--unlearn-steps", type=int, default=None)
    ap.add_argument("--magnitude", default=None)
    ap.add_argument("--keep", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="magnitude rule x keep ratio sweep instead")
    ap.add_argument("--keeps", default="0.2,0.4,0.6,0.8,1.0")
    ap.add_argument("--magnitudes", default=None, help="comma-separated (default: every rule)")
    ap.add_argument("--no-save", action="store_true", help="write no benchmarks/results file")
    args = ap.parse_args(argv)
    args.argv = None if argv is None else [__file__, *argv]
    if args.sweep:
        return sweep(args)

    from revival.runtime.threads import set_threads
    from revival.story.demo import DemoConfig, run_demo
    from revival.story.demo_report import concept_table, write_markdown
    from revival.testbed import load_pipeline

    set_threads(args.threads if args.threads is not None else 1)  # pinned: a shared machine
    pipe = load_pipeline()
    concepts = args.concepts.split(",") if args.concepts else list(pipe.classes)
    overrides = {k: v for k, v in {"skill_ratio": args.skill_ratio, "unlearn_steps": args.unlearn_steps,
                                   "magnitude": args.magnitude, "keep": args.keep,
                                   "target_erasure": args.target_erasure}.items() if v is not None}
    if args.skill_ratio is not None and args.target_erasure is None:
        overrides["target_erasure"] = None  # a fixed ratio
    overrides.update(controls=not args.no_controls, paper_recipe=not args.no_paper_recipe)
    reports = []
    t0 = time.perf_counter()
    for c in concepts:
        cfg = DemoConfig.make(concept=c, seeds_per_class=args.seeds_per_class, seed=args.seed, **overrides)
        print(f"=== {c}", file=sys.stderr, flush=True)
        reports.append(run_demo(cfg, args.out / c.replace(" ", "_").replace("/", "_"), progress=False, pipeline=pipe))
        acc = reports[-1]["accuracy"]
        print(f"    erased {[round(acc['erased'][s], 3) for s in acc['erased']]} "
              f"preserved {[round(acc['preserved'][s], 3) for s in acc['preserved']]}", file=sys.stderr, flush=True)
    table = concept_table(reports)
    head = (f"Testbed, {args.seeds_per_class} held-out images per class per stage (seeds from 1000); settings: "
            f"{json.dumps(overrides) if overrides else 'demo defaults'}; "
            f"{time.perf_counter() - t0:.0f} s in all.\n\n")
    write_markdown(head + table, args.out / "table.md")
    print(head + table)
    if not args.no_save:
        print(f"wrote {save(reports, args, overrides, time.perf_counter() - t0)}")
    return 0


def save(reports: list[dict], args, overrides: dict, seconds: float) -> Path:
    """benchmarks/results/testbed_table.json: per concept and pooled, erased and preserved accuracy per stage."""
    from revival.intervals import wilson
    from revival.story.demo_report import STAGES

    svt = bool(reports) and all("paper_recipe" in r for r in reports)
    ctl = bool(reports) and all("random_signs" in r.get("controls", {}) for r in reports)
    cols = (["concept", "skill ratio"] + [f"erased: {s}" for s in STAGES] + (["erased revived (paper's svt)"] if svt else [])
            + (["erased random-sign control"] if ctl else []) + [f"preserved: {s}" for s in STAGES]
            + ["signs: completion", "signs: kept", "seconds"])
    rows, pooled = [], []
    for r in reports:
        acc, ci = r["accuracy"], r["intervals"]
        erased = [estimate(acc["erased"][s], ci["erased"][s]) for s in STAGES]
        erased += [estimate(r["paper_recipe"]["erased"], r["paper_recipe"]["erased_ci95"])] if svt else []
        erased += [estimate(r["controls"]["random_signs"]["erased"], r["controls"]["random_signs"]["erased_ci95"])] \
            if ctl else []
        rows.append([r["concept"], r.get("unlearn", {}).get("skill_ratio")] + erased
                    + [estimate(acc["preserved"][s], ci["preserved"][s]) for s in STAGES]
                    + [r["sign_recovery"]["completion"], r["sign_recovery"]["kept"], r["timings"].get("total", sum(r["timings"].values()))])
        pooled.append(r)
    if reports:
        n_e = sum(r["images"]["erased"] for r in reports)
        n_p = sum(r["images"]["preserved"] for r in reports)

        def pool(get, side):
            n = n_e if side == "erased" else n_p
            hits = round(sum(get(r) * r["images"][side] for r in reports))
            return estimate(hits / n, wilson(hits, n))

        mean = ["pooled over concepts", None] + [pool(lambda r, s=s: r["accuracy"]["erased"][s], "erased") for s in STAGES]
        mean += [pool(lambda r: r["paper_recipe"]["erased"], "erased")] if svt else []
        mean += [pool(lambda r: r["controls"]["random_signs"]["erased"], "erased")] if ctl else []
        mean += [pool(lambda r, s=s: r["accuracy"]["preserved"][s], "preserved") for s in STAGES]
        mean += [sum(r["sign_recovery"][k] for r in reports) / len(reports) for k in ("completion", "kept")] + [seconds]
        rows.append(mean)
    n_stage = len(STAGES) + svt + ctl
    return write_results("testbed_table", {
        "title": "The demo's stages on every testbed concept",
        "about": f"Each concept through the demo (`revival.story.demo.run_demo`): ConceptPrune at the least-damage ratio "
                 f"unless set, the attack, the default defense, every attacker against it (the strongest is "
                 f"'obfuscated_revived'); {args.seeds_per_class} held-out images per class per stage (seeds from "
                 f"1000), 95% Wilson intervals; the pooled row pools the images of every concept. Settings: "
                 f"{json.dumps(overrides)}. Seconds: the demo's wall time per concept (the pooled row: the whole run), one thread.",
        "concepts": [r["concept"] for r in reports], "seeds_per_class": args.seeds_per_class, "settings": overrides,
        "seconds": seconds,
        "tables": [table("erased and preserved accuracy per stage", cols, rows,
                         formats=["", ".4g"] + [".2f"] * (n_stage + len(STAGES)) + [".3f", ".3f", ".0f"])]},
        argv=args.argv)


def sweep(args) -> int:
    """Every magnitude rule x keep ratio, attacking the ConceptPrune-unlearned testbed."""
    from revival.runtime.threads import set_threads
    from revival.attack.magnitudes import MAGNITUDES
    from revival.attack.revive import AttackConfig, revive
    from revival.release.layers import select_layers
    from revival.story.controls import sign_recovery
    from revival.story.demo import DemoConfig, testbed_evaluator
    from revival.story.demo_report import write_markdown
    from revival.testbed import load_pipeline
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, conceptprune

    set_threads(args.threads if args.threads is not None else 1)
    pipe = load_pipeline()
    concepts = args.concepts.split(",") if args.concepts else ["sneaker"]
    keeps = [float(k) for k in args.keeps.split(",")]
    mags = args.magnitudes.split(",") if args.magnitudes else list(MAGNITUDES)
    demo = DemoConfig.make(seeds_per_class=args.seeds_per_class, seed=args.seed, **{
        k: v for k, v in {"skill_ratio": args.skill_ratio, "unlearn_steps": args.unlearn_steps}.items() if v is not None})
    classes = list(pipe.classes)
    original = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    layers = select_layers(original)
    lines = ["| concept | magnitude | keep | erased | preserved | signs all | signs kept |",
             "|---|---|---:|---:|---:|---:|---:|"]
    rows_out = []
    t0 = time.perf_counter()
    for c in concepts:
        cfg = ConceptPruneConfig(skill_ratio=demo.skill_ratio, steps=demo.unlearn_steps, seed=args.seed)
        target, base = concept_prompts(c, classes)
        masks, _ = conceptprune(pipe, target, base, cfg)
        unlearned = {**original, **apply_masks(original, masks)}
        for label, state in (("original", original), ("unlearned", unlearned)):
            pipe.unet.load_state_dict(state)
            e, p, _, _ = testbed_evaluator(pipe, classes, c, args.seeds_per_class, demo)
            lines.append(f"| {c} | ({label}) | - | {e:.3f} | {p:.3f} | - | - |")
            rows_out.append([c, f"({label})", None, e, p, None, None])
            print(lines[-1], flush=True)
        for m in mags:
            for k in keeps:
                updates, _ = revive(unlearned, layers, AttackConfig(magnitude=m, keep=k, seed=args.seed), progress=False)
                revived = {**unlearned, **updates}
                completed = {**unlearned, **revive(unlearned, layers, AttackConfig(magnitude=m, keep=1.0, seed=args.seed),
                                                   progress=False)[0]}
                sr = sign_recovery(original, unlearned, revived, completed, layers)
                pipe.unet.load_state_dict(revived)
                e, p, _, _ = testbed_evaluator(pipe, classes, c, args.seeds_per_class, demo)
                lines.append(f"| {c} | {m} | {k:.1f} | {e:.3f} | {p:.3f} | {sr['all']:.3f} | {sr['kept']:.3f} |")
                rows_out.append([c, m, k, e, p, sr["all"], sr["kept"]])
                print(lines[-1], flush=True)
        pipe.unet.load_state_dict(original)
    head = (f"Attack sweep on the testbed, {args.seeds_per_class} images per class; ConceptPrune "
            f"skill ratio {demo.skill_ratio}, {demo.unlearn_steps} steps; {time.perf_counter() - t0:.0f} s.\n\n")
    write_markdown(head + "\n".join(lines) + "\n", args.out / "sweep.md")
    print(head + "\n".join(lines))
    if not args.no_save:
        path = write_results("testbed_table_sweep", {
            "title": "Attack magnitude rule x keep ratio on the testbed",
            "about": f"The ConceptPrune-unlearned testbed (skill ratio {demo.skill_ratio}, {demo.unlearn_steps} steps) "
                     f"attacked with every magnitude rule at every keep ratio; {args.seeds_per_class} images per "
                     "class; erased and preserved accuracy after the attack and sign recovery.",
            "seconds": time.perf_counter() - t0,
            "tables": [table("after the attack", ["concept", "magnitude", "keep", "erased", "preserved", "signs all",
                                                  "signs kept"], rows_out,
                             formats=["", "", ".1f", ".3f", ".3f", ".3f", ".3f"])]}, argv=args.argv)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
