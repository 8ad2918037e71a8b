"""CLI verb `demo`: erase -> revive -> defend on the embedded testbed."""
from __future__ import annotations

import json
from pathlib import Path

from revival.cli import options as O


def register(sub) -> None:
    d = O.verb(sub, "demo", "the paper end to end on the embedded testbed: erase, revive, defend",
               "Evaluate the testbed; erase a concept with ConceptPrune; revive it with the attack; defend (default: "
               "resample); attack the defended model with every attacker; score. Writes OUT (default out/demo): "
               "report.json, report.md, grid.png and bars.png.",
               O.CONCEPT_OPTIONAL, O.TASK, O.OUT_OPTIONAL, O.UNLEARNING, O.INFERENCE, O.ATTACK, O.SEED, O.DEVICE, O.DTYPE)
    d.add_argument("--quick", action="store_true", help="a smaller, faster run (fewer images)")
    d.add_argument("--seeds-per-class", type=int, default=None, help="evaluation images per class")
    d.add_argument("--classes", default=None, help="comma-separated classes to evaluate (default: all ten)")
    d.add_argument("--controls", action="store_true",
                   help="also evaluate the revived model with random, flipped and the original's signs, and the "
                        "original's values, at the same kept positions and magnitudes")
    from revival.defense import DEFENSES

    d.add_argument("--defense", default=None, choices=list(DEFENSES),
                   help="the defense of stage 4 (default: resample, the project's; gaussian: the paper's)")
    d.add_argument("--obfuscate-stats", default=None, choices=["row", "layer"],
                   help="defense noise statistics (default: row)")
    d.set_defaults(func=_demo)


def _demo(args) -> int:
    from revival.story.demo import DemoConfig, run_demo

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
    out = args.out or Path("out/demo")
    O.plan({"the output": out}, [], overwrite=True, folders={"the output": True})
    config = DemoConfig.make(concept=args.concept, quick=args.quick, task=args.task or "objects",
                             seed=0 if args.seed is None else args.seed, **overrides)
    from revival.model.loader import load_model

    pipeline = load_model("testbed", device=args.device, dtype=args.dtype, task=config.task)
    report = run_demo(config, out, progress=not args.quiet, pipeline=pipeline)
    if args.quiet:
        print(json.dumps(report["accuracy"]))
    return 0
