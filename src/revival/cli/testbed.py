"""CLI verbs of the testbed and the evaluation harness: `testbed train|classifier`, `generate`, `evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import RevivalError


def register(sub) -> None:
    t = sub.add_parser("testbed", help="train the embedded testbed model or its classifier")
    tsub = t.add_subparsers(dest="testbed_verb", required=True, metavar="ACTION")
    tr = tsub.add_parser("train", help="train the testbed UNet from a seed (42 min on one CPU thread; bit-identical to the committed weights)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int, default=None,
                    help="stage-1 optimizer steps (default: the committed run's)")
    tr.add_argument("--ff-steps", type=int, default=None,
                    help="stage-2 steps with the feed-forward dependence loss (0: skip stage 2)")
    tr.add_argument("--batch", type=int, default=None)
    tr.add_argument("--out", default="testbed-weights", help="output folder (default: ./testbed-weights)")
    tr.set_defaults(func=_train)
    tc = tsub.add_parser("classifier", help="train the testbed's Fashion-MNIST classifier")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--epochs", type=int, default=4)
    tc.add_argument("--out", default="testbed-weights/classifier.safetensors")
    tc.set_defaults(func=_train_classifier)

    def common(p):
        p.add_argument("--model", default="testbed",
                       help="'testbed' (default) or a local diffusers StableDiffusionPipeline folder")
        p.add_argument("--unet", default=None, help="UNet weights to swap in (folder or file)")
        p.add_argument("--prompts", default=None, help="CSV with columns prompt, class, seed "
                       "(default for the testbed: held-out phrasings of every class, seeds from 1000)")
        p.add_argument("--seeds", type=int, default=10, help="seeds per class for the default prompts")
        p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
        p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
        p.add_argument("--batch-size", type=int, default=100)
        p.add_argument("--device", default=None,
                       help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
        p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                       help="model precision (default: fp16 on CUDA, fp32 on CPU)")
        p.add_argument("--quiet", action="store_true")

    g = sub.add_parser("generate", help="prompts x seeds -> PNG images (resumable)")
    common(g)
    g.add_argument("--out", required=True, help="image folder")
    g.add_argument("--concept", default=None,
                   help="class of every row of a prompt file without a class column (e.g. I2P: 'nudity')")
    g.set_defaults(func=_generate)
    e = sub.add_parser("evaluate", help="erased / preserved accuracy of a concept")
    common(e)
    e.add_argument("--concept", required=True, help="the erased class, e.g. 'sneaker'")
    e.add_argument("--classifier", default=None, choices=["testbed", "imagenet", "resnet50", "hf", "nudenet", "clip"],
                   help="testbed CNN, imagenet (EfficientNet-lite0), resnet50 (torchvision weights file, "
                        "the paper's), hf (a local transformers image "
                        "classifier folder, e.g. ResNet-50), nudenet (nudity), clip (prompt-image "
                        "similarity + zero-shot class; local CLIP folder). Default: testbed for the "
                        "testbed, imagenet otherwise")
    e.add_argument("--classifier-path", default=None,
                   help="weights for the classifier: the hf/clip model folder, a ResNet-50 or "
                        "EfficientNet-lite0 state dict, or a NudeNet ONNX file")
    e.add_argument("--nudenet-threshold", type=float, default=None,
                   help="NudeNet score above which a label counts (default 0.5, as in the paper)")
    e.add_argument("--nudenet-labels", default=None,
                   help="comma-separated NudeNet labels that flag an image (default: every *_EXPOSED label)")
    e.add_argument("--clip-template", default=None,
                   help="text for CLIP zero-shot classes, with {} for the class (default '{}')")
    e.add_argument("--out", default=None, help="output folder (default: ./evaluation-<concept>)")
    e.set_defaults(func=_evaluate)


def _train(args) -> int:
    from ..testbed import train as T

    s = T.train_testbed(args.out, seed=args.seed, steps=args.steps or T.DEFAULT_STEPS,
                        ff_steps=T.DEFAULT_FF_STEPS if args.ff_steps is None else args.ff_steps,
                        batch=args.batch or T.DEFAULT_BATCH)
    print(f"trained {s['trained_steps']} steps in {s['training_seconds']:.0f}s -> {Path(args.out) / 'unet'}")
    return 0


def _train_classifier(args) -> int:
    from ..testbed.classifier import save_classifier, train_classifier

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, acc = train_classifier(epochs=args.epochs, seed=args.seed)
    save_classifier(model, out, {"test_accuracy": f"{acc:.4f}", "epochs": str(args.epochs),
                                 "seed": str(args.seed), "resolution": "16"})
    print(f"test accuracy {acc:.4f} -> {out}")
    return 0


def _rows(args, model):
    from ..evaluate import default_prompts, read_prompts

    if args.prompts:
        return read_prompts(args.prompts, default_class=getattr(args, "concept", None))
    if not hasattr(model, "classes"):
        raise RevivalError("--prompts is required for a Stable Diffusion model.")
    return default_prompts(model.classes, args.seeds)


def _load(args):
    from ..evaluate import load_model

    return load_model(args.model, args.unet, args.device, dtype=args.dtype)


def _settings(args) -> dict:
    return {"model": str(args.model), "unet": None if args.unet is None else str(Path(args.unet).resolve())}


def _generate(args) -> int:
    from ..evaluate import generate

    model = _load(args)
    rows = _rows(args, model)
    paths = generate(model, rows, args.out, steps=args.steps, guidance=args.guidance,
                     batch_size=args.batch_size, progress=not args.quiet, settings=_settings(args))
    from ..distributed import is_main

    if is_main():
        print(f"{len(paths)} images in {args.out}")
    return 0


def _evaluate(args) -> int:
    from ..evaluate import evaluate_concept, get_classifier

    model = _load(args)
    rows = _rows(args, model)
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
    clf = get_classifier(name, str(model.device), args.classifier_path, **options)
    slug = "-".join(args.concept.lower().split())
    out = Path(args.out or f"evaluation-{slug}")
    res = evaluate_concept(model, rows, clf, args.concept, out_dir=out, steps=args.steps,
                           guidance=args.guidance, batch_size=args.batch_size,
                           progress=not args.quiet, settings=_settings(args))
    from ..distributed import is_main

    if is_main():  # a distributed launch: one table, from the process that wrote the report
        print(res.table())
        print(f"report: {out / 'evaluation.json'}, {out / 'evaluation.md'}, {out / 'evaluation_grid.png'}")
    return 0
