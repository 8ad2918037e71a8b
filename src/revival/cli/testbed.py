"""CLI verbs `testbed train|classifier`: reproduce the embedded testbed and its classifier from a seed."""
from __future__ import annotations

from pathlib import Path



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
