"""CLI verbs `testbed train|classifier`: reproduce the embedded testbed and its classifier from a seed."""
from __future__ import annotations

import argparse
from pathlib import Path

from revival.cli import options as O



def register(sub) -> None:
    t = O.verb(sub, "testbed", "train the embedded testbed model, its classifier or its detectors")
    tsub = t.add_subparsers(dest="testbed_verb", required=True, metavar="ACTION")
    tr = O.verb(tsub, "train", "train the testbed UNet from a seed (42 min on one CPU thread; bit-identical to the "
                               "committed weights)", "Train the testbed UNet from a seed; writes OUT/unet "
                               "(default: ./testbed-weights).", O.OUT_OPTIONAL, O.OVERWRITE, O.SEED)
    tr.add_argument("--steps", type=int, default=None, help="stage-1 optimizer steps (default: the committed run's)")
    tr.add_argument("--ff-steps", type=int, default=None,
                    help="stage-2 steps with the feed-forward dependence loss (0: skip stage 2)")
    tr.add_argument("--batch", type=int, default=None)
    tr.add_argument("--task-steps", type=int, default=None,
                    help="stage-3 steps on the objects + styles + attribute mix (0: the object-only v1)")
    tr.add_argument("--task-ff-weight", type=float, default=None,
                    help="stage-3 weight of the feed-forward dependence loss (default: the committed run's)")
    tr.add_argument("--without", default=None, metavar="CLASS",
                    help="leave this class's images out of every stage: the never-learned model of that concept "
                         "(same recipe and seeds; with --task-steps 0, the object testbed's twin)")
    tr.add_argument("--from", dest="init_from", default=None,
                    help="a UNet folder holding the stage-2 result (e.g. testbed v1): run stage 3 only")
    tr.set_defaults(func=_train)
    epochs = argparse.ArgumentParser(add_help=False)
    epochs.add_argument("--epochs", type=int, default=None, help="training epochs (classifier 6, detector 2)")
    tc = O.verb(tsub, "classifier", "train the testbed's Fashion-MNIST classifier",
                "Train the testbed's classifier; writes OUT (default testbed-weights/classifier.safetensors).",
                O.OUT_OPTIONAL, O.OVERWRITE, O.SEED, epochs)
    tc.set_defaults(func=_train_classifier)
    td = O.verb(tsub, "detector", "train the style or attribute detector of the testbed's tasks",
                "Train a task detector; writes OUT (default testbed-weights/KIND_detector.safetensors).",
                O.OUT_OPTIONAL, O.OVERWRITE, O.SEED, epochs)
    td.add_argument("--kind", required=True, choices=["style", "attribute"])
    td.set_defaults(func=_train_detector)


def _defaults(args, out: str, epochs: int | None = None, folder: bool = False):
    """The verb's defaults for the shared options left out (None); the output checked before
    any training (an existing one only with --overwrite)."""
    args.out = Path(args.out or out)
    args.seed = 0 if args.seed is None else args.seed
    if epochs is not None:
        args.epochs = epochs if args.epochs is None else args.epochs
    O.plan({"the output": args.out}, [getattr(args, "init_from", None)], overwrite=args.overwrite,
           folders={"the output": folder})
    return args


def _train(args) -> int:
    from revival.testbed import train as T

    if args.without is not None:
        T.check_class(args.without)
    args = _defaults(args, "testbed-weights", folder=True)

    s = T.train_testbed(args.out, seed=args.seed, steps=args.steps or T.DEFAULT_STEPS,
                        ff_steps=T.DEFAULT_FF_STEPS if args.ff_steps is None else args.ff_steps,
                        task_steps=T.DEFAULT_TASK_STEPS if args.task_steps is None else args.task_steps,
                        task_ff_weight=T.TASK_FF_WEIGHT if args.task_ff_weight is None else args.task_ff_weight,
                        init_from=args.init_from, batch=args.batch or T.DEFAULT_BATCH,
                        without=args.without)
    print(f"trained {s['trained_steps']} steps in {s['training_seconds']:.0f}s -> {Path(args.out) / 'unet'}")
    return 0


def _train_classifier(args) -> int:
    from revival.testbed.classifier import save_classifier, train_classifier

    out = _defaults(args, "testbed-weights/classifier.safetensors", 6).out
    out.parent.mkdir(parents=True, exist_ok=True)
    model, acc = train_classifier(epochs=args.epochs, seed=args.seed)
    save_classifier(model, out, {"test_accuracy": f"{acc:.4f}", "epochs": str(args.epochs),
                                 "seed": str(args.seed), "resolution": "16"})
    print(f"test accuracy {acc:.4f} -> {out}")
    return 0


def _train_detector(args) -> int:
    from revival.testbed.detectors import cli

    return cli(_defaults(args, f"testbed-weights/{args.kind}_detector.safetensors", 2))
