"""CLI verbs `generate` (prompts x seeds -> images) and `evaluate` (erased / preserved accuracy)."""
from __future__ import annotations

import argparse
from pathlib import Path

from revival.errors import RevivalError
from revival.cli import options as O


def register(sub) -> None:
    sampling = argparse.ArgumentParser(add_help=False)  # the two verbs' own options
    sampling.add_argument("--unet", default=None,
                          help="UNet weights to swap in (folder or file; 'testbed': the testbed's own)")
    sampling.add_argument("--seeds", type=int, default=10, help="seeds per class for the default prompts")
    sampling.add_argument("--steps", dest="inference_steps", type=int, default=None, help="= --inference-steps")
    sampling.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    sampling.add_argument("--batch-size", type=int, default=100)
    parents = (O.MODEL, O.PROMPTS, O.INFERENCE, sampling, O.DEVICE, O.DTYPE)

    g = O.verb(sub, "generate", "prompts x seeds -> PNG images (resumable)", None, *parents, O.OUT,
               O.CONCEPT_OPTIONAL)
    g.set_defaults(func=_generate)
    e = O.verb(sub, "evaluate", "erased / preserved accuracy of a concept",
               "Generate the prompts' images (resumable) and judge them: erased / preserved accuracy with 95% "
               "intervals, a grid and a per-class table in OUT (default ./evaluation-CONCEPT).",
               *parents, O.OUT_OPTIONAL, O.CONCEPT, O.TASK, O.CLASSIFIER)
    e.add_argument("--nudenet-threshold", type=float, default=None,
                   help="NudeNet score above which a label counts (default 0.5, as in the paper)")
    e.add_argument("--nudenet-labels", default=None,
                   help="comma-separated NudeNet labels that flag an image (default: every *_EXPOSED label)")
    e.add_argument("--clip-template", default=None,
                   help="text for CLIP zero-shot classes, with {} for the class (default '{}')")
    e.add_argument("--fid-real", default=None,
                   help="a folder of real reference images: also report FID/KID of all generated images "
                        "against them (e.g. COCO images for COCO prompts), written to OUT/utility.json")
    e.add_argument("--fid-features", default=None, choices=["testbed", "clip"],
                   help="feature space of --fid-real: the testbed classifier or a local CLIP vision tower "
                        "(default: testbed for the testbed, clip otherwise)")
    e.add_argument("--fid-clip", default=None,
                   help="local CLIP folder for --fid-features clip (default: --classifier-path when the "
                        "classifier is clip)")
    e.set_defaults(func=_evaluate)


def _plan(args, out) -> None:
    """The output folder checked against every input before any work (it may exist: a resumed run)."""
    inputs = [args.prompts, getattr(args, "fid_real", None)]
    inputs += [] if args.unet is None or str(args.unet) == "testbed" else [args.unet]
    inputs += [] if str(args.model) == "testbed" else [args.model]
    O.plan({"the output": out}, inputs, overwrite=True, folders={"the output": True})


def _rows(args, model):
    from revival.evaluate import default_prompts, read_prompts

    if args.prompts:
        return read_prompts(args.prompts, default_class=getattr(args, "concept", None))
    if not hasattr(model, "classes"):
        raise RevivalError("--prompts is required for a Stable Diffusion model.")
    return default_prompts(model.classes, args.seeds)


def _load(args):
    from revival.evaluate import load_model

    unet = O.checkpoint_path(args.unet, getattr(args, "task", None))
    return load_model(args.model, unet, args.device, dtype=args.dtype, task=getattr(args, "task", None))


def _settings(args) -> dict:
    return {"model": str(args.model), "unet": None if args.unet is None else str(Path(args.unet).resolve())}


def _generate(args) -> int:
    _plan(args, args.out)
    from revival.evaluate import generate

    model = _load(args)
    rows = _rows(args, model)
    paths = generate(model, rows, args.out, steps=args.inference_steps, guidance=args.guidance,
                     batch_size=args.batch_size, progress=not args.quiet, settings=_settings(args))
    from revival.runtime.distributed import is_main

    if is_main():
        print(f"{len(paths)} images in {args.out}")
    return 0


def _evaluate(args) -> int:
    out = Path(args.out or f"evaluation-{'-'.join(args.concept.lower().split())}")
    _plan(args, out)
    from revival.evaluate import evaluate_concept, get_classifier

    model = _load(args)
    if args.task is not None:
        from revival.testbed.tasks import task_evaluation

        rows, task_judge = task_evaluation(args)
    else:
        rows, task_judge = _rows(args, model), None
    name = args.classifier or ("testbed" if str(args.model) == "testbed" else "imagenet")
    options = {}
    if name == "nudenet":
        options = dict(threshold=args.nudenet_threshold,
                       labels=None if args.nudenet_labels is None else
                       [l for l in args.nudenet_labels.split(",") if l.strip()])
    elif name == "clip":
        options = dict(template=args.clip_template)
    elif args.nudenet_threshold is not None or args.nudenet_labels or args.clip_template:
        raise RevivalError(f"--nudenet-*/--clip-template do not apply to the {name} classifier.")
    features = args.fid_features or ("testbed" if str(args.model) == "testbed" else "clip")
    fid_clip = args.fid_clip or (args.classifier_path if name == "clip" else None)
    if args.fid_real is not None:
        if not Path(args.fid_real).is_dir():
            raise RevivalError(f"the real-image folder {args.fid_real} does not exist.")
        if features == "clip" and fid_clip is None:
            raise RevivalError("--fid-features clip needs a local CLIP folder (--fid-clip DIR).")
        from revival.evaluate.fid import load_real_images

        load_real_images(args.fid_real, 8)  # every real image readable, before any generation
    clf = task_judge or get_classifier(name, str(model.device), args.classifier_path, **options)
    res = evaluate_concept(model, rows, clf, args.concept, out_dir=out, steps=args.inference_steps,
                           guidance=args.guidance, batch_size=args.batch_size,
                           progress=not args.quiet, settings=_settings(args))
    from revival.runtime.distributed import is_main

    if is_main():  # a distributed launch: one table, from the process that wrote the report
        print(res.table())
        print(f"report: {out / 'evaluation.json'}, {out / 'evaluation.md'}, {out / 'evaluation_grid.png'}")
    if args.fid_real is not None:
        from revival.evaluate.fid import utility
        from revival.evaluate.generate import image_name, load_images
        from revival.io import write_json

        if is_main():
            images = load_images([out / "images" / image_name(r) for r in rows])
            u = utility(images, args.fid_real, features, clip_folder=fid_clip, device=str(model.device))
            write_json(u.to_dict(), out / "utility.json")
            print(f"utility: FID {u.fid:.3f}, KID {u.kid:.5f} +- {u.kid_std:.5f} against {u.real} real images "
                  f"({u.features}) -> {out / 'utility.json'}")
    return 0
