"""CLI verb `relearn`: the relearning attacker, fine-tuning a release on K real images for S steps.

Every bad input (a budget of 0, K larger than the images available, a folder holding non-images,
a release whose tensors do not fit the model, an existing output) is refused with one sentence
(exit 2) before the model is loaded and before any file is written. The relearned UNet is written
in the release's own format (only its UNet tensors change) with a JSON report beside it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from revival.cli import options as O


def register(sub) -> None:
    p = O.verb(sub, "relearn", "fine-tune a release on K real images of the erased concept for S steps",
               "The relearning attacker: load the release into the model's UNet, fine-tune it with the model's own "
               "denoising objective on K real images of the concept (testbed: Fashion-MNIST's test split, which no "
               "erasure trains on; Stable Diffusion: --image-folder) for S AdamW steps, with captions of the "
               "concept. Writes the relearned UNet in the release's format and a JSON report beside it.",
               O.MODEL, O.CONCEPT, O.OUT, O.REPORT, O.OVERWRITE, O.SEED, O.DEVICE)
    p.add_argument("--release", required=True, help="the released (unlearned) UNet checkpoint ('testbed': the "
                                                    "testbed's own UNet)")
    p.add_argument("--images", type=O.whole, required=True, help="K: real images of the concept to train on")
    p.add_argument("--steps", type=O.whole, required=True, help="S: fine-tuning steps")
    p.add_argument("--image-folder", type=Path, default=None,
                   help="a folder of the concept's images (PNG/JPEG/WebP/BMP only; needed on Stable Diffusion)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 3e-4)")
    p.set_defaults(func=_relearn)


def _model_unet(model) -> Path:
    """The checkpoint of the model's own UNet, read for its tensor shapes only."""
    from revival.errors import RevivalError

    if str(model) == "testbed":
        return O.testbed_unet()
    folder = Path(model)
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        raise RevivalError(f"{folder} is not a local diffusers pipeline folder (model_index.json and unet/ are "
                           "needed); give 'testbed' or such a folder.")
    return folder / "unet"


def release_state(ckpt, model_ckpt) -> tuple[dict, list[str]]:
    """(the release's UNet tensors by name, names it holds that are not the model's UNet's), checked
    against the shapes of the model's own checkpoint without loading either's weights
    (`revival.release.belongs`)."""
    from revival.release.belongs import check_belongs

    shared, other = check_belongs(model_ckpt.tensors, ckpt.tensors, f"the release {ckpt.path}",
                                  others_allowed=ckpt.naming == "ldm")
    return {k: ckpt.tensors[k] for k in shared}, other


def _relearn(args) -> int:
    from revival.attack.attackers.relearn import RelearnBudget, RelearnConfig, check_images
    from revival.io import default_report_path, load_checkpoint

    release = O.checkpoint_path(args.release)
    testbed = str(args.model) == "testbed"
    report = args.report if args.report is not None else default_report_path(args.out)
    inputs = [p for p in (release, *O.model_inputs(args.model), args.image_folder) if p is not None]
    O.plan({"the output": args.out, "the report": report}, inputs, overwrite=args.overwrite,
           folders={"the output": O.checkpoint_output(args.out, release), "the report": False})
    budget = RelearnBudget(args.images, args.steps)
    config = RelearnConfig(**{k: v for k, v in (("lr", args.lr), ("seed", args.seed))
                              if v is not None})
    model_unet = _model_unet(args.model)
    check_images(testbed, args.concept, budget.images, args.image_folder)
    ckpt = load_checkpoint(release)
    state, ignored = release_state(ckpt, load_checkpoint(model_unet))
    return _run(args, testbed, release, ckpt, state, ignored, budget, config, report, inputs)


def _run(args, testbed, release, ckpt, state, ignored, budget, config, report, inputs) -> int:
    """The work, once every input and output has been checked."""
    from revival import __version__
    from revival.attack.attackers.relearn import default_captions, relearn_images, relearn_state
    from revival.model.denoise import Denoiser
    from revival.io import save_checkpoint, write_json
    from revival.model.loader import load_model

    start = time.perf_counter()
    model = load_model(args.model, device=args.device, dtype="fp32")
    images = relearn_images(testbed, args.concept, budget.images, args.image_folder, config.seed,
                            size=Denoiser(model).size)
    log = None if args.quiet else (lambda line: print(f"relearn: {line}", file=sys.stderr))
    losses: list[float] = []
    relearned = relearn_state(model, state, args.concept, budget, config, images=images, log=log, losses=losses)
    written = save_checkpoint(ckpt, args.out, {k: relearned[k] for k in state}, overwrite=args.overwrite)
    data = {
        "verb": "relearn", "revival_version": __version__, "model": str(args.model), "release": str(release),
        "output": str(written), "concept": args.concept, "budget": budget.to_dict(), "config": config.to_dict(),
        "batch": config.batch_for(budget.images), "device": str(model.device),
        "images": {"source": str(args.image_folder) if args.image_folder else "Fashion-MNIST test split",
                   "count": budget.images, "seed": config.seed},
        "captions": default_captions(testbed, args.concept),
        "relearned_tensors": len(state), "ignored_tensors": len(ignored),
        "loss": {"first": losses[0], "last": losses[-1], "steps": losses},
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(data, report, inputs, overwrite=args.overwrite)
    print(f"relearned '{args.concept}' on {budget.images} images for {budget.steps} steps (loss {losses[0]:.4f} -> "
          f"{losses[-1]:.4f}) -> {written} (report {report})")
    return 0
