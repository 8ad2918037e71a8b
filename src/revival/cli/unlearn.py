"""CLI verb `unlearn`: erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation)
or by a fine-tuning erasure (`revival.unlearn.erasures.ERASURES`: anchor, esd, robust).

Every output (the UNet, its report beside it, the masks) is checked before the model is loaded:
the least-damage search and the erasures' training take minutes, and a refusal after them would
waste them. An option of the other family (a pruning option with an erasure, or the reverse) is
refused first, in one sentence.
"""
from __future__ import annotations

from pathlib import Path

from revival.cli import options as O

# dest -> option: what only the pruning methods take, and what only the erasures take.
PRUNING_ONLY = {"skill_ratio": "--skill-ratio", "target_erasure": "--target-erasure", "search_images": "--search-images",
                "modules": "--modules", "ratio": "--ratio", "target_prompts": "--target-prompts",
                "base_prompts": "--base-prompts", "word_list": "--word-list", "save_masks": "--save-masks"}
ERASURE_ONLY = {"lr": "--lr", "batch": "--batch", "anchor": "--anchor", "retain_weight": "--retain-weight",
                "images": "--images", "esd_eta": "--esd-eta", "secret_seed": "--secret-seed"}


def register(sub) -> None:
    from revival.unlearn.erasures import ERASURES
    from revival.unlearn.methods import METHODS

    p = O.verb(sub, "unlearn", "erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation) "
                               "or by fine-tuning (anchor, ESD, robust)",
               "ConceptPrune: WANDA scores of concept vs. base prompts over the first denoising steps; the "
               "concept's weights are set to zero. The fine-tuning erasures train the UNet instead and write all "
               "of it. Writes the UNet in the input UNet's format and its JSON report beside it.",
               O.MODEL, O.CONCEPT, O.TASK, O.OUT, O.REPORT, O.OVERWRITE, O.UNLEARNING, O.INFERENCE, O.SEED, O.DEVICE, O.DTYPE)
    p.add_argument("--steps", dest="unlearn_steps", type=int, default=None,
                   help="= --unlearn-steps; a fine-tuning erasure: its optimiser steps")
    p.add_argument("--method", default="conceptprune", choices=[*METHODS, *ERASURES.names()],
                   help="pruning: conceptprune (WANDA on ff.net.2, default), cad (per-row weight x gradient in both "
                        "feed-forward linears), neurons (whole hidden units deactivated); fine-tuning: "
                        + ERASURES.help())
    e = p.add_argument_group("fine-tuning erasures")
    e.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: the method's)")
    e.add_argument("--batch", type=int, default=None, help="images a step, per part (default: the method's)")
    e.add_argument("--anchor", default=None,
                   help="what the concept is mapped to: a testbed class (default: the nearest) or an SD prompt "
                        "(default 'a photo')")
    e.add_argument("--retain-weight", type=float, default=None, help="weight of the retain loss (default 1)")
    e.add_argument("--esd-eta", type=float, default=None, help="esd: the negative guidance's scale eta (default 1)")
    e.add_argument("--secret-seed", type=int, default=None,
                   help="robust: fix the weight noise for a research run (default: the OS's entropy, never recorded; "
                        "whoever knows the seed can subtract the noise)")
    e.add_argument("--images", type=int, default=None,
                   help="training images: testbed per class (default 1000); SD drawn by the model per part "
                        "(default 8, with --inference-steps, default 25)")
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
    from revival.io.outputs import default_report_path

    inputs = O.model_inputs(args.model, args.task) + [args.target_prompts, args.base_prompts, args.word_list]
    report = args.report if args.report is not None else default_report_path(args.out)
    unet = inputs[0] if str(args.model) == "testbed" else Path(args.model) / "unet"
    O.plan({"the output": args.out, "the report": report, "--save-masks": args.save_masks}, inputs,
           overwrite=args.overwrite, folders={"the output": O.checkpoint_output(args.out, unet),
                                              "the report": False, "--save-masks": False})
    return report


def _check_family(args) -> None:
    """One sentence (exit 2) for an option of the other family, before any work."""
    from revival.unlearn.methods import METHODS

    pruning = args.method in METHODS
    for dest, option in (ERASURE_ONLY if pruning else PRUNING_ONLY).items():
        if getattr(args, dest) is not None:
            raise O.UsageError(f"{option} is for the fine-tuning erasures, not the pruning method {args.method}."
                               if pruning else f"{option} is for the pruning methods ({', '.join(METHODS)}), "
                               f"not the fine-tuning erasure {args.method}.")


def _erase(args, report: Path) -> int:
    from revival.unlearn.erasures import erasure_config
    from revival.unlearn.run import erase

    config = erasure_config(args.method, str(args.model) == "testbed", steps=args.unlearn_steps, lr=args.lr,
                            batch=args.batch, retain_weight=args.retain_weight, anchor=args.anchor, seed=args.seed,
                            esd_eta=args.esd_eta, secret_seed=args.secret_seed)
    if args.secret_seed is not None:
        import sys

        print("warning: --secret-seed makes the erasure's noise known to whoever knows the seed; use it for "
              "research runs only, never for a release", file=sys.stderr)
    result = erase(args.method, args.model, args.concept, args.out, config=config, task=args.task or "objects",
                   report=report, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
                   progress=not args.quiet, images=args.images, inference_steps=args.inference_steps)
    print(f"erased '{args.concept}' by {args.method} ({config.steps} steps, anchor {result['data']['anchor']!r}) "
          f"-> {args.out} (report {result['report']})")
    return 0


def _unlearn(args) -> int:
    _check_family(args)
    report = _plan(args)  # before anything heavy is imported or loaded
    from revival.unlearn.methods import METHODS

    if args.method not in METHODS:
        return _erase(args, report)
    from revival.errors import RevivalError
    from revival.evaluate.prompts import prompt_texts as read_prompts
    from revival.unlearn.conceptprune import PRESETS, TESTBED_HALVES, TESTBED_PRESETS, ConceptPruneConfig, task_prompts
    from revival.unlearn.run import unlearn

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
        from revival.unlearn.run import unlearn_method

        if args.method == "conceptprune" and args.ratio is not None:
            raise RevivalError("--ratio is for cad and neurons; ConceptPrune takes --skill-ratio.")
        result = unlearn_method(args.method, args.model, args.concept, args.out,
                                ratio=args.ratio if args.method != "conceptprune" else ratio,
                                steps=steps if args.method != "cad" else None, modules=args.modules,
                                seed=seed, inference_steps=args.inference_steps, **common)
    else:
        result = unlearn(args.model, args.concept, args.out, config=config,
                         target_erasure=args.target_erasure, search_seeds=args.search_images, **common)
    from revival.runtime.distributed import is_main

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
