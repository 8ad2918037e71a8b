"""CLI verb `demo`: erase -> revive -> defend on the embedded testbed."""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    d = sub.add_parser("demo", help="the paper end to end on the embedded testbed: erase, revive, defend",
                       description="Evaluate the testbed; erase a concept with ConceptPrune; revive it "
                                   "with the attack; defend (default: resample); attack the defended model with every "
                                   "attacker; "
                                   "score. Writes report.json, report.md, grid.png and bars.png.")
    d.add_argument("--concept", default=None, help="the concept to erase: a testbed class (objects, default "
                   "sneaker), a style (artists, default Orsolo) or 'tagged' (nudity)")
    d.add_argument("--task", default="objects", choices=["objects", "artists", "nudity"],
                   help="the paper's task on the testbed (default: objects)")
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    d.add_argument("--seeds-per-class", type=int, default=None, help="evaluation images per class")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run (fewer images)")
    d.add_argument("--skill-ratio", type=float, default=None,
                   help="a fixed ConceptPrune skill ratio (default: the least that erases, see --target-erasure)")
    d.add_argument("--target-erasure", type=float, default=None,
                   help="pick the smallest skill ratio whose erased accuracy on validation prompts is at most "
                        "this (default 0.2 unless --skill-ratio is given)")
    d.add_argument("--search-images", type=int, default=None,
                   help="validation images of the concept per probe of that search (default 60)")
    d.add_argument("--controls", action="store_true",
                   help="also evaluate the revived model with random, flipped and the original's signs, and the "
                        "original's values, at the same kept positions and magnitudes")
    d.add_argument("--unlearn-steps", type=int, default=None, help="ConceptPrune tau (default: the demo's)")
    d.add_argument("--modules", default=None,
                   help="regex of the UNet modules ConceptPrune prunes (default: the paper's ff.net.2 layers)")
    d.add_argument("--keep", type=float, default=None, help="attack Top-K keep ratio (default: the attack's)")
    d.add_argument("--magnitude", default=None, help="attack magnitude rule (default: the demo's)")
    d.add_argument("--solver", default=None, help="attack completion solver (default: the attack's)")
    d.add_argument("--defense", default=None, choices=["resample", "gaussian", "decoy"],
                   help="the defense of stage 4 (default: resample, the project's; gaussian: the paper's)")
    d.add_argument("--obfuscate-stats", default=None, choices=["row", "layer"], help="defense noise statistics (default: row)")
    d.add_argument("--classes", default=None, help="comma-separated classes to evaluate (default: all ten)")
    d.add_argument("--inference-steps", type=int, default=None, help="denoising steps (default: the testbed's)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    from ..device import add_arguments

    add_arguments(d)
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_demo)


def _demo(args) -> int:
    from ..demo import DemoConfig, run_demo

    overrides = {k: v for k, v in {
        "skill_ratio": args.skill_ratio, "unlearn_steps": args.unlearn_steps, "keep": args.keep,
        "magnitude": args.magnitude, "seeds_per_class": args.seeds_per_class, "solver": args.solver, "modules": args.modules,
        "obfuscate_stats": args.obfuscate_stats, "defense": args.defense, "inference_steps": args.inference_steps,
        "controls": args.controls or None, "target_erasure": args.target_erasure,
        "search_seeds": args.search_images,
        "classes": tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    }.items() if v is not None}
    if args.skill_ratio is not None and args.target_erasure is None:
        overrides["target_erasure"] = None  # a fixed ratio: no search
    config = DemoConfig.make(concept=args.concept, quick=args.quick, task=args.task, seed=args.seed, **overrides)
    from ..models import load_model

    pipeline = load_model("testbed", device=args.device, dtype=args.dtype, task=config.task)
    report = run_demo(config, args.out, progress=not args.quiet, pipeline=pipeline)
    if args.quiet:
        print(json.dumps(report["accuracy"]))
    return 0
