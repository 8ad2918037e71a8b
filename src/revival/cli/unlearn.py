"""CLI verb `unlearn`: erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation).

Every output (the pruned UNet, its report beside it, the masks) is checked before the model is
loaded: the least-damage search takes minutes, and a refusal after it would waste them.
"""
from __future__ import annotations

from pathlib import Path

from . import options as O


def register(sub) -> None:
    p = O.verb(sub, "unlearn", "erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation)",
               "ConceptPrune: WANDA scores of concept vs. base prompts over the first denoising steps; the "
               "concept's weights are set to zero. Writes the pruned UNet in the input UNet's format and its JSON "
               "report beside it.",
               O.MODEL, O.CONCEPT, O.TASK, O.OUT, O.REPORT, O.OVERWRITE, O.UNLEARNING, O.INFERENCE, O.SEED, O.DEVICE, O.DTYPE)
    p.add_argument("--steps", dest="unlearn_steps", type=int, default=None, help="= --unlearn-steps")
    p.add_argument("--method", default="conceptprune", choices=["conceptprune", "cad", "neurons"],
                   help="conceptprune (WANDA on ff.net.2, default), cad (per-row weight x gradient in both "
                        "feed-forward linears), neurons (whole hidden units deactivated)")
    p.add_argument("--ratio", type=float, default=None,
                   help="cad: share of each row zeroed (default 0.02); neurons: share of units (default 0.05)")
    p.add_argument("--target-prompts", type=Path, default=None, help="text file, one prompt a line, WITH the concept")
    p.add_argument("--base-prompts", type=Path, default=None, help="text file, one prompt a line, WITHOUT the concept")
    p.add_argument("--word-list", type=Path, default=None,
                   help="fill-in words for the task's ConceptPrune prompts, one a line: scenes (objects: "
                        "'a {concept} in a {scene}' vs 'a {scene}'), things (artists), humans (nudity)")
    p.add_argument("--save-masks", type=Path, default=None, help="also write the masks (safetensors of booleans)")
    p.set_defaults(func=_unlearn)


def _plan(args) -> Path:
    """Every output checked before any work; returns the report path (OUT.report.json by default)."""
    from ..io.outputs import default_report_path

    inputs = O.model_inputs(args.model, args.task) + [args.target_prompts, args.base_prompts, args.word_list]
    report = args.report if args.report is not None else default_report_path(args.out)
    unet = inputs[0] if str(args.model) == "testbed" else Path(args.model) / "unet"
    O.plan({"the output": args.out, "the report": report, "--save-masks": args.save_masks}, inputs,
           overwrite=args.overwrite, folders={"the output": O.checkpoint_output(args.out, unet),
                                              "the report": False, "--save-masks": False})
    return report


def _unlearn(args) -> int:
    report = _plan(args)  # before anything heavy is imported or loaded
    from ..errors import RevivalError
    from ..evaluate.prompts import prompt_texts as read_prompts
    from ..unlearn.conceptprune import PRESETS, TESTBED_HALVES, TESTBED_PRESETS, ConceptPruneConfig, task_prompts
    from ..unlearning import unlearn

    task = args.task or "objects"
    seed = 0 if args.seed is None else args.seed
    testbed = str(args.model) == "testbed"
    ratio, steps = (TESTBED_PRESETS if testbed else PRESETS)[task]
    ratio = ratio if args.skill_ratio is None else args.skill_ratio
    steps = steps if args.unlearn_steps is None else args.unlearn_steps
    config = ConceptPruneConfig(skill_ratio=ratio, steps=steps, seed=seed, inference_steps=args.inference_steps,
                                halves=TESTBED_HALVES[task] if testbed else "both"
                                ) if args.method == "conceptprune" else None
    target = read_prompts(args.target_prompts) if args.target_prompts else None
    base = read_prompts(args.base_prompts) if args.base_prompts else None
    if args.word_list is not None:
        if target is not None or base is not None:
            raise RevivalError("give either --word-list or --target-prompts/--base-prompts, not both.")
        target, base = task_prompts(task, args.concept, read_prompts(args.word_list))
    common = dict(task=task, target_prompts=target, base_prompts=base, masks_path=args.save_masks,
                  report=report, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
                  progress=not args.quiet)
    if args.method != "conceptprune" or args.modules is not None or args.ratio is not None:
        from ..unlearning import unlearn_method

        if args.method == "conceptprune" and args.ratio is not None:
            raise RevivalError("--ratio is for cad and neurons; ConceptPrune takes --skill-ratio.")
        result = unlearn_method(args.method, args.model, args.concept, args.out,
                                ratio=args.ratio if args.method != "conceptprune" else ratio,
                                steps=steps if args.method != "cad" else None, modules=args.modules,
                                seed=seed, inference_steps=args.inference_steps, **common)
    else:
        result = unlearn(args.model, args.concept, args.out, config=config,
                         target_erasure=args.target_erasure, search_seeds=args.search_images, **common)
    from ..distributed import is_main

    if not is_main():  # a distributed launch: the main process reports
        return 0
    d = result.to_dict()
    t = d["totals"]
    if "least_damage" in d["config"]:
        ld = d["config"]["least_damage"]
        print(f"least-damage skill ratio {ld['skill_ratio']:.4g}: erased {ld['erased']:.2f} on validation images"
              + ("" if ld["reached"] else f" (target {ld['target']} NOT reached)"))
    print(f"unlearned '{args.concept}': pruned {t['pruned']} of {t['numel']} weights "
          f"({100 * t['fraction']:.2f}%) in {len(d['layers'])} layers -> {args.out} (report {result.report})")
    if args.save_masks and not args.quiet:
        print(f"masks -> {args.save_masks}")
    return 0
