"""CLI verbs `unlearn` (ConceptPrune) and `demo` (erase -> revive -> defend on the testbed)."""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("unlearn", help="erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation)",
                       description="ConceptPrune: WANDA scores of concept vs. base prompts over the "
                                   "first denoising steps; the concept's weights are set to zero.")
    p.add_argument("--model", default="testbed",
                   help="'testbed' (the embedded model, default) or a local diffusers Stable Diffusion folder")
    p.add_argument("--method", default="conceptprune", choices=["conceptprune", "cad", "neurons"],
                   help="conceptprune (WANDA on ff.net.2, default), cad (per-row weight x gradient in both "
                        "feed-forward linears), neurons (whole hidden units deactivated)")
    p.add_argument("--modules", default=None,
                   help="conceptprune: ff.net.2 (default), ff.net.0.proj, ff, to_v, attn2.to_v or a regex over "
                        "UNet module names; neurons: ff (default) or attn2; cad: a regex (default: both ff linears)")
    p.add_argument("--ratio", type=float, default=None,
                   help="cad: share of each row zeroed (default 0.02); neurons: share of units (default 0.05)")
    p.add_argument("--concept", required=True, help="the concept to erase (a testbed class name, an object, an artist)")
    p.add_argument("--task", default="objects", choices=["objects", "artists", "nudity"],
                   help="preset of skill ratio/steps and of the default prompt sets (default: objects)")
    p.add_argument("--target-prompts", type=Path, default=None, help="text file, one prompt a line, WITH the concept")
    p.add_argument("--base-prompts", type=Path, default=None, help="text file, one prompt a line, WITHOUT the concept")
    p.add_argument("--word-list", type=Path, default=None,
                   help="fill-in words for the task's ConceptPrune prompts, one a line: scenes (objects: "
                        "'a {concept} in a {scene}' vs 'a {scene}'), things (artists), humans (nudity); "
                        "e.g. the paper's common_scenes.txt by path")
    p.add_argument("--skill-ratio", type=float, default=None, help="per-row share of columns pruned per step (default: the task's preset, objects 0.02)")
    p.add_argument("--steps", type=int, default=None, help="tau: masks of the first STEPS denoising steps are united (default: the task's preset, objects 10)")
    p.add_argument("--inference-steps", type=int, default=None, help="sampler schedule length (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the prompts' noise (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the pruned UNet (the input UNet's format)")
    p.add_argument("--save-masks", type=Path, default=None, help="also write the masks (safetensors of booleans)")
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: OUTPUT + '.unlearn.json')")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_unlearn)

    d = sub.add_parser("demo", help="the paper end to end on the embedded testbed: erase, revive, defend",
                       description="Evaluate the testbed; erase a concept with ConceptPrune; revive it "
                                   "with the attack; defend with Gaussian obfuscation; attack again; "
                                   "score. Writes report.json, report.md, grid.png and bars.png.")
    d.add_argument("--concept", default="sneaker", help="the testbed class to erase (default: sneaker)")
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    d.add_argument("--seeds-per-class", type=int, default=None, help="evaluation images per class")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run (fewer images)")
    d.add_argument("--skill-ratio", type=float, default=None, help="ConceptPrune skill ratio (default: the demo's)")
    d.add_argument("--unlearn-steps", type=int, default=None, help="ConceptPrune tau (default: the demo's)")
    d.add_argument("--modules", default=None,
                   help="regex of the UNet modules ConceptPrune prunes (default: the paper's ff.net.2 layers)")
    d.add_argument("--keep", type=float, default=None, help="attack Top-K keep ratio (default: the attack's)")
    d.add_argument("--magnitude", default=None, help="attack magnitude rule (default: the demo's)")
    d.add_argument("--solver", default=None, help="attack completion solver (default: the attack's)")
    d.add_argument("--obfuscate-stats", default=None, choices=["row", "layer"], help="defense noise statistics (default: row)")
    d.add_argument("--classes", default=None, help="comma-separated classes to evaluate (default: all ten)")
    d.add_argument("--inference-steps", type=int, default=None, help="denoising steps (default: the testbed's)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_demo)


def _unlearn(args) -> int:
    from ..errors import RevivalError
    from ..report import write_json
    from ..unlearn.conceptprune import PRESETS, ConceptPruneConfig, read_prompts, task_prompts, unlearn

    ratio, steps = PRESETS[args.task]
    ratio = ratio if args.skill_ratio is None else args.skill_ratio
    steps = steps if args.steps is None else args.steps
    config = ConceptPruneConfig(skill_ratio=ratio, steps=steps, seed=args.seed,
                                inference_steps=args.inference_steps) if args.method == "conceptprune" else None
    target = read_prompts(args.target_prompts) if args.target_prompts else None
    base = read_prompts(args.base_prompts) if args.base_prompts else None
    if args.word_list is not None:
        if target is not None or base is not None:
            raise RevivalError("give either --word-list or --target-prompts/--base-prompts, not both.")
        target, base = task_prompts(args.task, args.concept, read_prompts(args.word_list))
    report = args.report or args.output.with_name(args.output.name + ".unlearn.json")
    if report.resolve() == args.output.resolve():
        raise RevivalError("--report must differ from the output path.")
    if args.method != "conceptprune" or args.modules is not None or args.ratio is not None:
        from ..unlearn.methods import unlearn_method

        if args.method == "conceptprune" and args.ratio is not None:
            raise RevivalError("--ratio is for cad and neurons; ConceptPrune takes --skill-ratio.")
        ratio = args.ratio if args.method != "conceptprune" else ratio
        steps = steps if args.method != "cad" else None
        result = unlearn_method(args.method, args.model, args.concept, args.output, task=args.task,
                                target_prompts=target, base_prompts=base, masks_path=args.save_masks,
                                device=args.device, progress=not args.quiet, ratio=ratio, steps=steps,
                                modules=args.modules, seed=args.seed, inference_steps=args.inference_steps)
    else:
        result = unlearn(args.model, args.concept, args.output, config=config, task=args.task,
                         target_prompts=target, base_prompts=base, masks_path=args.save_masks,
                         device=args.device, progress=not args.quiet)
    d = result.to_dict()
    write_json(d, report)
    t = d["totals"]
    print(f"unlearned '{args.concept}': pruned {t['pruned']} of {t['numel']} weights "
          f"({100 * t['fraction']:.2f}%) in {len(d['layers'])} layers -> {args.output}")
    if args.save_masks:
        print(f"masks -> {args.save_masks}")
    print(f"report -> {report}")
    return 0


def _demo(args) -> int:
    from ..demo import DemoConfig, run_demo

    overrides = {k: v for k, v in {
        "skill_ratio": args.skill_ratio, "unlearn_steps": args.unlearn_steps, "keep": args.keep,
        "magnitude": args.magnitude, "seeds_per_class": args.seeds_per_class, "solver": args.solver, "modules": args.modules,
        "obfuscate_stats": args.obfuscate_stats, "inference_steps": args.inference_steps,
        "classes": tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    }.items() if v is not None}
    config = DemoConfig.make(concept=args.concept, quick=args.quick, seed=args.seed, **overrides)
    report = run_demo(config, args.out, progress=not args.quiet)
    if args.quiet:
        print(json.dumps(report["accuracy"]))
    return 0
