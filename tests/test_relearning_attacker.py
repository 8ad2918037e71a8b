"""The relearning attacker (`revival.attack.attackers.relearn`, `revival relearn`): on the testbed's
ConceptPrune-erased sneaker, on a tiny random Stable Diffusion, and its refusals of bad input."""
from __future__ import annotations

import json

import pytest
import torch

from revival.attack.attackers.relearn import (RELEARN_BUDGETS, RelearnBudget, RelearnConfig, relearn_images,
                                    relearn_state)
from revival.errors import RevivalError

CONCEPT, OTHER = "sneaker", "bag"


@pytest.fixture(scope="module")
def testbed():
    """The testbed (fp32, CPU), its own UNet state, and a strong ConceptPrune erasure of the
    sneaker (skill ratio 0.1: its loss rises well above the original's, leaving much to relearn)."""
    from revival.model.loader import load_model
    from revival.testbed.text import CLASSES
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, conceptprune

    model = load_model("testbed", device="cpu", dtype="fp32")
    own = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    target, base = concept_prompts(CONCEPT, CLASSES)
    masks, _ = conceptprune(model, target, base, ConceptPruneConfig(skill_ratio=0.1, steps=10))
    return model, own, {**own, **apply_masks(own, masks)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_budgets_and_config_are_validated():
    assert [(b.images, b.steps) for b in RELEARN_BUDGETS] == [(1, 20), (4, 20), (4, 50), (16, 50), (16, 100)]
    costs = [b.images * b.steps for b in RELEARN_BUDGETS]
    assert costs == sorted(costs)
    for bad, name in (((0, 5), "images"), ((2, 0), "steps"), ((True, 5), "images"), ((2, 1.5), "steps")):
        with pytest.raises(RevivalError, match=name):
            RelearnBudget(*bad)
    with pytest.raises(RevivalError, match="learning rate"):
        RelearnConfig(lr=0)
    assert RelearnConfig().batch_for(4) == 4 and RelearnConfig().batch_for(40) == 16
    import revival

    assert revival.RelearnBudget is RelearnBudget and revival.relearn_state is relearn_state
    assert revival.RELEARN_BUDGETS == RELEARN_BUDGETS


def test_relearning_changes_the_state_restores_the_model_and_is_seeded(testbed):
    model, own, erased = testbed
    given = {k: v.clone() for k, v in erased.items()}
    budget = RelearnBudget(4, 3)
    a = relearn_state(model, erased, CONCEPT, budget, RelearnConfig(seed=0))
    assert same(erased, given)                                          # the input is not touched
    assert same({k: v for k, v in model.unet.state_dict().items()}, own)  # the model's own UNet is back
    assert a.keys() == own.keys() and all(a[k].dtype == erased[k].dtype for k in a)
    assert not same(a, erased)
    b = relearn_state(model, erased, CONCEPT, budget, RelearnConfig(seed=0))
    assert same(a, b)                                                   # bit-identical, shares nothing
    c = relearn_state(model, erased, CONCEPT, budget, RelearnConfig(seed=1))
    assert not same(a, c)


def _held_out_loss(model, state, cls, images) -> float:
    """The denoising loss of `images` of `cls` under `state`, at fixed timesteps and noise."""
    from revival.model.denoise import Denoiser
    from revival.testbed.text import class_captions

    d, own = Denoiser(model), {k: v.clone() for k, v in model.unet.state_dict().items()}
    caps = class_captions(cls)
    x0, c = d.encode_images(images), d.encode_text([caps[i % len(caps)] for i in range(len(images))])
    g = torch.Generator().manual_seed(123)
    model.unet.load_state_dict(state)
    try:
        with torch.no_grad():
            return sum(float(d.loss(model.unet, x0, c, g)) for _ in range(2)) / 2
    finally:
        model.unet.load_state_dict(own)


def test_relearning_on_the_concept_brings_the_concept_back(testbed):
    """K=16, S=30 on real sneakers lowers held-out sneakers' loss more than bags', and more than
    the same budget spent on bags does: the training images matter, not the steps alone."""
    from revival.concepts.images import testbed_images

    model, _, erased = testbed
    budget = RelearnBudget(16, 30)
    train = testbed_images(CONCEPT, 16, "test", 0)
    held = {c: testbed_images(c, None, "test", 0)[16:112] for c in (CONCEPT, OTHER)}
    assert not any(torch.equal(h, t) for h in held[CONCEPT] for t in train)   # disjoint from training
    on_concept = relearn_state(model, erased, CONCEPT, budget)
    on_other = relearn_state(model, erased, OTHER, budget)
    loss = {(s, c): _held_out_loss(model, st, c, held[c])
            for s, st in (("erased", erased), ("concept", on_concept), ("other", on_other)) for c in held}
    drop = {c: loss["erased", c] - loss["concept", c] for c in held}
    assert drop[CONCEPT] > 0 and drop[CONCEPT] > drop[OTHER]
    assert loss["concept", CONCEPT] < loss["other", CONCEPT]


def test_cli_relearn_writes_the_release_format_and_a_report(testbed, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from revival.cli import main

    _, own, erased = testbed
    save_file(erased, str(tmp_path / "release.safetensors"), metadata={"note": "kept"})
    out = tmp_path / "relearned.safetensors"
    rc = main(["relearn", "--release", str(tmp_path / "release.safetensors"), "--concept", CONCEPT, "--images", "2",
               "--steps", "2", "-o", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    got = load_file(str(out))
    assert got.keys() == erased.keys() and not same(got, erased)
    report = json.loads((tmp_path / "relearned.safetensors.report.json").read_text())
    assert report["budget"] == {"images": 2, "steps": 2} and len(report["loss"]["steps"]) == 2
    assert report["images"]["source"] == "Fashion-MNIST test split" and report["concept"] == CONCEPT


def _pngs(folder, n, extra=None):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        data = (torch.rand(20, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(data).save(folder / f"img{i}.png")
    if extra:
        (folder / extra).write_text("not an image")
    return folder


@pytest.mark.parametrize("case", ["more images than the folder", "a text file", "zero steps", "other shapes"])
def test_cli_relearn_refuses_bad_input_before_any_work(case, tiny_unet, tmp_path, capsys, monkeypatch):
    import revival.model.loader
    from revival.cli import main

    def never(*a, **k):
        raise AssertionError("the model was loaded although the input was bad")

    monkeypatch.setattr(revival.model.loader, "load_model", never)
    folder = _pngs(tmp_path / "imgs", 3, extra="notes.txt" if case == "a text file" else None)
    release = tiny_unet.pruned_dir if case == "other shapes" else "testbed"
    images, steps = {"more images than the folder": ("5", "2"), "zero steps": ("2", "0")}.get(case, ("2", "2"))
    out = tmp_path / "new" / "out.safetensors"
    rc = main(["relearn", "--release", str(release), "--concept", CONCEPT, "--images", images, "--steps", steps,
               "--image-folder", str(folder), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert {"more images than the folder": "holds only 3", "a text file": "notes.txt", "zero steps": "steps",
            "other shapes": "does not belong"}[case] in err
    assert not (tmp_path / "new").exists()


def test_relearn_on_a_tiny_stable_diffusion(tmp_path, capsys):
    from tiny_models import make_tiny_sd

    from revival.cli import main
    from revival.model.denoise import Denoiser
    from revival.model.loader import load_model

    sd = make_tiny_sd(tmp_path)
    folder = _pngs(tmp_path / "imgs", 3)
    model = load_model(sd, device="cpu", dtype="fp32")
    own = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    images = relearn_images(False, "red car", 3, folder, seed=0, size=Denoiser(model).size)
    assert images.shape == (3, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    budget = RelearnBudget(3, 3)
    a = relearn_state(model, own, "red car", budget, images=images)
    b = relearn_state(model, own, "red car", budget, images=images)
    assert same(a, b) and not same(a, own) and same(dict(model.unet.state_dict()), own)
    with pytest.raises(RevivalError, match="images"):
        relearn_state(model, own, "red car", budget)              # SD: the images must be given
    with pytest.raises(RevivalError, match="image-folder"):
        relearn_images(False, "red car", 3)
    # the verb keeps a diffusers folder release a folder
    out = tmp_path / "relearned"
    rc = main(["relearn", "--model", str(sd), "--release", str(sd / "unet"), "--concept", "red car", "--images", "2",
               "--steps", "2", "--image-folder", str(folder), "-o", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "config.json").is_file() and (tmp_path / "relearned.report.json").is_file()
