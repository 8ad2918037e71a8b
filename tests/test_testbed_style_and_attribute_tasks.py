"""The testbed's style (artists) and attribute (nudity) tasks: renderings, captions, detectors on
real Fashion-MNIST test images, ConceptPrune's prompts vs the evaluation's, stage-3 training."""
from __future__ import annotations

import json

import pytest
import torch

from revival.errors import RevivalError
from revival.testbed import CLASSES
from revival.testbed import text as T
from revival.testbed import transforms as X
from revival.testbed.data import load_fashion_mnist


@pytest.fixture(scope="module")
def real():
    x, y = load_fashion_mnist("test", 16)
    return x[:400], y[:400]


def test_renderings_are_distinct_and_deterministic(real):
    x, _ = real
    outs = {s: X.apply_style(x, s) for s in X.STYLES}
    for s, o in outs.items():
        assert o.shape == x.shape and o.min() >= 0 and o.max() <= 1
        assert torch.equal(o, X.apply_style(x, s))            # no randomness
        assert (o - x).abs().mean() > 0.03                    # visibly changed
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outs[a] - outs[b]).abs().mean() > 0.03, (a, b)
    assert torch.allclose(X.apply_style(outs["Varenne"], "Varenne"), x, atol=1e-6)   # inversion is its own inverse
    assert torch.equal(X.apply_style(x, "none"), x)
    assert outs["Belgrave"][..., 1::2, :].max() <= 0.15 + 1e-6   # the dimmed rows
    assert set(outs["Kessler"].unique().tolist()) <= {0.0, 0.6000000238418579}
    tagged = X.add_tag(x)
    assert torch.all(tagged[..., 1:3, 1:3] == 1) and torch.all(tagged[..., 0, 0:4] == 0)
    assert torch.equal(tagged[..., 4:, :], x[..., 4:, :])      # only the corner changes
    kinds = torch.arange(len(x)) % (len(X.STYLES) + 2)
    r = X.render(x, kinds)
    assert torch.equal(r[kinds == 1], outs["Varenne"][kinds == 1])
    assert torch.equal(r[kinds == 0], x[kinds == 0]) and torch.equal(r[kinds == 5], tagged[kinds == 5])
    with pytest.raises(RevivalError, match="unknown style"):
        X.apply_style(x, "Picasso")


def test_captions():
    caps = T.style_captions("sneaker", "Varenne")
    assert "a sneaker in the style of Varenne" in caps and all("Varenne" in c for c in caps)
    assert T.with_modifier("a sneaker", "tagged") == "a tagged sneaker"
    assert T.with_modifier("an ankle boot", "tagged") == "a tagged ankle boot"
    assert T.with_modifier("a pair of trousers", "tagged") == "a pair of tagged trousers"
    assert T.with_modifier("sneakers", "tagged") == "tagged sneakers"
    assert "a photo of a tagged bag" in T.attribute_captions("bag", "tagged")
    # the style-less object captions are kept unchanged
    assert T.class_captions("sneaker")[:2] == ["a sneaker", "a photo of a sneaker"]


@pytest.mark.parametrize("kind", ["style", "attribute"])
def test_committed_detectors_on_real_test_images(kind):
    """The committed detectors read every rendering of held-out real test images (>= 0.95)."""
    from revival.testbed.detectors import load_detector_weights, test_accuracy

    acc = test_accuracy(load_detector_weights(kind), kind, limit=1000)
    labels = [k for k in acc if k not in ("overall", "images_per_label")]
    assert len(labels) == (len(X.STYLES) + 1 if kind == "style" else 2)
    assert all(acc[k] >= 0.95 for k in labels), acc


def test_detector_as_classifier_and_bad_weights(real, tmp_path):
    from revival.evaluate import get_classifier

    x, _ = real
    style = get_classifier("testbed-style")
    pred = style.predict(X.apply_style(x[:50], "Orsolo"))
    assert sum(p == "Orsolo" for p in pred) >= 45 and style.is_hit("Orsolo", "Orsolo")
    attr = get_classifier("testbed-attribute")
    assert sum(p == "tagged" for p in attr.predict(X.add_tag(x[:50]))) >= 48
    assert sum(p == "none" for p in attr.predict(x[:50])) >= 48
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(RevivalError):
        get_classifier("testbed-style", weights=bad)
    with pytest.raises(RevivalError, match="not found"):
        get_classifier("testbed-attribute", weights=tmp_path / "missing.safetensors")


def test_unlearning_and_evaluation_prompts_are_disjoint():
    from revival.testbed.tasks import EVAL_FIRST_SEED, task_rows
    from revival.unlearn.conceptprune import testbed_task_prompts

    for task, concept in (("artists", "Varenne"), ("nudity", "tagged")):
        target, base = testbed_task_prompts(task, concept, CLASSES)
        assert len(target) == 2 * len(CLASSES)
        # artists: the style-less captions and every other style (the styles to keep) form the base
        assert len(base) == 2 * len(CLASSES) * (len(X.STYLES) if task == "artists" else 1)
        assert all(concept in t for t in target) and not any(concept in b for b in base)
        rows = task_rows(task, concept, 3)
        assert not {r.prompt for r in rows} & (set(target) | set(base))
        assert min(r.seed for r in rows) == EVAL_FIRST_SEED
        assert len({r.seed for r in rows}) == len(rows)          # every image its own initial noise
    assert testbed_task_prompts("nudity", "tagged", ["sneaker"])[0] == ["a photo of a tagged sneaker",
                                                                       "a picture of a tagged sneaker"]
    base = testbed_task_prompts("artists", "Orsolo", ["bag"])[1]
    assert base[:2] == ["a photo of a bag", "a picture of a bag"]
    assert {b.rsplit(" ", 1)[1] for b in base[2:]} == set(X.STYLES) - {"Orsolo"}
    rows = task_rows("artists", "Orsolo", 2, items=["bag"])
    assert [r.cls for r in rows] == [s for s in X.STYLES for _ in range(2)]
    rows = task_rows("nudity", "tagged", 1, items=["bag", "coat"])
    assert [(r.prompt, r.cls) for r in rows] == [("an image of a tagged bag", "tagged"),
                                                 ("an image of a tagged coat", "tagged"),
                                                 ("an image of a bag", "bag"), ("an image of a coat", "coat")]
    with pytest.raises(RevivalError, match="Unknown concept"):
        task_rows("artists", "Picasso", 1)
    with pytest.raises(RevivalError, match="--task"):
        task_rows("poems", "x", 1)


def test_committed_model_draws_the_tasks():
    """The committed task testbed (v2) draws each style and the tag when asked (the tasks'
    originals); the object testbed (v1) does not know the styles."""
    from revival.evaluate.evaluate import evaluate_concept
    from revival.testbed import TASKS_UNET_DIR, load_pipeline, testbed_unet_dir
    from revival.testbed.tasks import TaskJudge, task_rows

    assert testbed_unet_dir("artists") == testbed_unet_dir("nudity") == TASKS_UNET_DIR != testbed_unet_dir("objects")
    pipe = load_pipeline(TASKS_UNET_DIR)
    rows = task_rows("artists", "Varenne", 1, items=["trouser", "sneaker", "bag", "dress"], first_seed=7)
    res = evaluate_concept(pipe, rows, TaskJudge("artists"), "Varenne", steps=8)
    assert all(s.accuracy >= 0.5 for s in res.per_class.values()), {c: s.accuracy for c, s in res.per_class.items()}
    rows = task_rows("nudity", "tagged", 2, items=["trouser", "sneaker", "bag", "dress"], first_seed=7)
    res = evaluate_concept(pipe, rows, TaskJudge("nudity"), "tagged", steps=8)
    assert res.erased_accuracy >= 0.6 and res.preserved_accuracy >= 0.6


def test_stage3_mix_changes_the_draws_and_is_refused_when_bad(tmp_path):
    from revival.testbed.train import TASK_MIX, train_testbed, train_unet

    assert abs(sum(TASK_MIX) - 1) < 1e-9 and len(TASK_MIX) == len(X.STYLES) + 2
    with pytest.raises(RevivalError, match="mix"):
        train_unet(tmp_path / "bad", steps=1, batch=2, mix=(0.5, 0.5))
    with pytest.raises(RevivalError, match="--from"):
        train_testbed(tmp_path / "x", init_from=tmp_path)


def test_cli_evaluate_task(tmp_path, capsys):
    from revival.cli import main

    out = tmp_path / "ev"
    rc = main(["evaluate", "--task", "nudity", "--concept", "tagged", "--seeds", "1", "--steps", "4",
               "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "evaluation.json").read_text())
    assert rep["concept"] == "tagged" and rep["erased_images"] == 10 and rep["preserved_images"] == 10
    assert main(["evaluate", "--task", "artists", "--concept", "Picasso", "--out", str(tmp_path / "e2")]) == 2
    assert "Unknown concept" in capsys.readouterr().err


@pytest.mark.parametrize("task,concept,preserved", [("artists", "Orsolo", "Varenne"), ("nudity", "tagged", "sneaker")])
def test_demo_task_reduced(tmp_path, task, concept, preserved):
    from revival.cli import main

    out = tmp_path / task
    rc = main(["demo", "--task", task, "--out", str(out), "--seeds-per-class", "1", "--classes",
               "sneaker,trouser,bag", "--inference-steps", "6", "--unlearn-steps", "3", "--search-images", "10",
               "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["concept"] == concept
    details = json.loads((out / "details.json").read_text())
    assert details["config"]["task"] == task and details["config"]["halves"] == "cond"
    assert details["unlearn"]["totals"]["pruned"] > 0 and details["unlearn"]["n_target_prompts"] == 6
    assert set(details["per_class"]["original"]) >= {concept, preserved}
    # the least skill ratio that erases, searched with the task's detector on validation seeds
    probes = details["least_damage"]["probes"]
    assert report["unlearn"]["target_erasure"] == 0.2 and len(probes) >= 1
    assert report["unlearn"]["skill_ratio"] == details["least_damage"]["skill_ratio"]
    assert all(0 <= p["erased"] <= 1 for p in probes)
    assert (out / "grid.png").stat().st_size > 0 and concept in (out / "report.md").read_text()


def test_demo_task_bad_concept(tmp_path, capsys):
    from revival.cli import main

    assert main(["demo", "--task", "artists", "--concept", "sneaker", "--out", str(tmp_path / "d")]) == 2
    assert "Unknown concept 'sneaker'" in capsys.readouterr().err


def test_task_evaluation_seeds_stay_below_the_search_seeds():
    """A demo asking for so many images that their seeds would reach the skill-ratio search's
    validation seeds is refused in one sentence, before any image is drawn."""
    from types import SimpleNamespace

    from revival.testbed.tasks import task_evaluator

    cfg = SimpleNamespace(task="artists", inference_steps=None, guidance=None)
    with pytest.raises(RevivalError, match="at most 25"):
        task_evaluator(None, CLASSES, "Orsolo", 26, cfg)
