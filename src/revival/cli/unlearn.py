"""CLI verb `unlearn`: erase a concept by pruning (ConceptPrune)."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("unlearn", help="erase a concept by pruning (ConceptPrune, CAD-Erase-like, neuron deactivation)",
                       description="ConceptPrune: WANDA scores of concept vs. base prompts over the "
                                   "first denoising steps; the concept's weights are set to zero.")
    p.add_argument("--model", default="testbed",
                   help="'testbed' (the embedded model, default) or a local diffusers Stable Diffusion folder")
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
    from ..device import add_arguments

    add_arguments(p)
    p.add_argument("-o", "--output", required=True, type=Path, help="the pruned UNet (the input UNet's format)")
    p.add_argument("--save-masks", type=Path, default=None, help="also write the masks (safetensors of booleans)")
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: OUTPUT + '.unlearn.json')")
    p.add_argument("--method", default="conceptprune", choices=["conceptprune", "cad", "neurons"],
                   help="conceptprune (WANDA on ff.net.2, default), cad (per-row weight x gradient in both "
                        "feed-forward linears), neurons (whole hidden units deactivated)")
    p.add_argument("--modules", default=None,
                   help="conceptprune: ff.net.2 (default), ff.net.0.proj, ff, to_v, attn2.to_v or a regex over "
                        "UNet module names; neurons: ff (default) or attn2; cad: a regex (default: both ff linears)")
    p.add_argument("--ratio", type=float, default=None,
                   help="cad: share of each row zeroed (default 0.02); neurons: share of units (default 0.05)")
    p.add_argument("--target-erasure", type=float, default=None,
                   help="testbed: use the smallest skill ratio whose erased accuracy on held-out validation "
                        "images is at most this (the least-damage setting); the ratio is in the report")
    p.add_argument("--search-images", type=int, default=None,
                   help="validation images of the concept per probe of that search (default 60)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (only the files this command writes; others are kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_unlearn)


def _unlearn(args) -> int:
    from ..errors import RevivalError
    from ..evaluate.prompts import prompt_texts as read_prompts
    from ..unlearn.conceptprune import (PRESETS, TESTBED_HALVES, TESTBED_PRESETS, ConceptPruneConfig, task_prompts,
                                        unlearn)

    testbed = str(args.model) == "testbed"
    ratio, steps = (TESTBED_PRESETS if testbed else PRESETS)[args.task]
    ratio = ratio if args.skill_ratio is None else args.skill_ratio
    steps = steps if args.steps is None else args.steps
    config = ConceptPruneConfig(skill_ratio=ratio, steps=steps, seed=args.seed, inference_steps=args.inference_steps,
                                halves=TESTBED_HALVES[args.task] if testbed else "both"
                                ) if args.method == "conceptprune" else None
    target = read_prompts(args.target_prompts) if args.target_prompts else None
    base = read_prompts(args.base_prompts) if args.base_prompts else None
    if args.word_list is not None:
        if target is not None or base is not None:
            raise RevivalError("give either --word-list or --target-prompts/--base-prompts, not both.")
        target, base = task_prompts(args.task, args.concept, read_prompts(args.word_list))
    common = dict(task=args.task, target_prompts=target, base_prompts=base, masks_path=args.save_masks,
                  report=args.report, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
                  progress=not args.quiet)
    if args.method != "conceptprune" or args.modules is not None or args.ratio is not None:
        from ..unlearn.methods import unlearn_method

        if args.method == "conceptprune" and args.ratio is not None:
            raise RevivalError("--ratio is for cad and neurons; ConceptPrune takes --skill-ratio.")
        result = unlearn_method(args.method, args.model, args.concept, args.output,
                                ratio=args.ratio if args.method != "conceptprune" else ratio,
                                steps=steps if args.method != "cad" else None, modules=args.modules,
                                seed=args.seed, inference_steps=args.inference_steps, **common)
    else:
        result = unlearn(args.model, args.concept, args.output, config=config,
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
          f"({100 * t['fraction']:.2f}%) in {len(d['layers'])} layers -> {args.output}")
    if args.save_masks:
        print(f"masks -> {args.save_masks}")
    print(f"report -> {result.report}")
    return 0
