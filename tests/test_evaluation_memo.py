"""The evaluation memo: the same images of the same model judged once per process, and never a
stale result: every part of the key (weights, in-place changes, rows, judge, settings) is live."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from revival.audit.result import Evaluations, evaluate_state
from revival.evaluate.classifiers import get_classifier
from revival.evaluate.memo import EVAL_MEMO, enabled
from revival.evaluate.prompts import default_prompts
from revival.model.loader import load_model

CFG = SimpleNamespace(inference_steps=3, guidance=None)


@pytest.fixture(scope="module")
def parts():
    pipe = load_model("testbed", device="cpu")
    judge = get_classifier("testbed")
    state = {n: t.detach().clone() for n, t in pipe.unet.state_dict().items()}
    rows = default_prompts(["sneaker", "bag"], 3, 1000)
    return pipe, judge, state, rows


@pytest.fixture
def counted(parts, monkeypatch):
    pipe = parts[0]
    calls = []
    real = type(pipe)._generate

    def spy(self, prompts, *a, **k):
        calls.append(len(prompts))
        return real(self, prompts, *a, **k)

    monkeypatch.setattr(type(pipe), "_generate", spy)
    EVAL_MEMO.clear()
    yield calls
    EVAL_MEMO.clear()


def test_a_second_audit_of_the_same_state_draws_nothing(parts, counted):
    pipe, judge, state, rows = parts
    first = Evaluations(pipe, rows, judge, "sneaker", CFG).evidence(state)
    drawn = sum(counted)
    assert drawn == len(rows)
    again = Evaluations(pipe, rows, judge, "sneaker", CFG).evidence(dict(state))   # a new audit, copied dict
    assert sum(counted) == drawn and EVAL_MEMO.hits == 1
    assert again.outcomes == first.outcomes and torch.equal(again.images, first.images)
    with enabled(False):                                   # off: drawn again, and the same images
        res, outcomes = evaluate_state(pipe, state, rows, judge, "sneaker", CFG)
    assert sum(counted) == 2 * drawn and outcomes == first.outcomes and torch.equal(res.images, first.images)


def test_every_part_of_the_key_is_live(parts, counted):
    pipe, judge, state, rows = parts
    evaluate_state(pipe, state, rows, judge, "sneaker", CFG)
    n = len(rows)
    changed = {k: v.clone() for k, v in state.items()}
    name = next(k for k in changed if k.endswith("ff.net.2.weight"))
    changed[name].mul_(0.0)                                # an in-place change of one tensor
    evaluate_state(pipe, changed, rows, judge, "sneaker", CFG)
    assert sum(counted) == 2 * n
    state[name].add_(0.0)                                  # in place, same bytes: a fresh digest, same key
    evaluate_state(pipe, state, rows, judge, "sneaker", CFG)
    assert sum(counted) == 2 * n
    evaluate_state(pipe, state, rows[:-1], judge, "sneaker", CFG)                       # other rows
    evaluate_state(pipe, state, rows, judge, "bag", CFG)                                # another concept
    evaluate_state(pipe, state, rows, judge, "sneaker", SimpleNamespace(inference_steps=4, guidance=None))
    assert sum(counted) == 2 * n + (n - 1) + n + n
    other = get_classifier("testbed")
    with torch.no_grad():
        next(other._clf.model.parameters()).add_(1e-3)     # a judge with other weights
    evaluate_state(pipe, state, rows, other, "sneaker", CFG)
    assert sum(counted) == 2 * n + (n - 1) + 3 * n


def test_a_pipeline_or_judge_without_a_fingerprint_is_never_memoised(parts, counted):
    pipe, judge, state, rows = parts

    class Judge:                                           # a judge from outside the package
        name, labels = "outside", judge.labels

        def __getattr__(self, attr):
            if attr == "fingerprint":
                raise AttributeError(attr)
            return getattr(judge, attr)

    outside = Judge()
    assert EVAL_MEMO.key(pipe, state, rows, outside, "sneaker", {}) is None
    evaluate_state(pipe, state, rows, outside, "sneaker", CFG)
    evaluate_state(pipe, state, rows, outside, "sneaker", CFG)
    assert sum(counted) == 2 * len(rows) and len(EVAL_MEMO) == 0


def test_an_attack_on_the_never_learned_model_is_judged_on_the_concept_alone(parts, counted, tmp_path):
    """Only its excess on the concept is read: the concept's images are drawn (the same outcomes as
    a full evaluation), the other rows are not (blank in the grid); a state already judged in full
    keeps that evidence."""
    from revival.story.demo_report import image_grid

    pipe, judge, state, rows = parts
    changed = {k: v.clone() for k, v in state.items()}
    name = next(k for k in changed if k.endswith("ff.net.2.weight"))
    changed[name].mul_(0.5)
    concept = [i for i, r in enumerate(rows) if r.cls == "sneaker"]
    assert 0 < len(concept) < len(rows)
    evals = Evaluations(pipe, rows, judge, "sneaker", CFG)
    part = evals.evidence(changed, erased_only=True)
    assert counted == [len(concept)]
    full = Evaluations(pipe, rows, judge, "sneaker", CFG).evidence(changed)
    assert part.outcomes == full.outcomes and part.accuracy().erased == full.accuracy().erased
    assert part.accuracy().preserved.n == 0 < full.accuracy().preserved.n
    assert torch.equal(part.images[concept], full.images[concept])
    others = [i for i in range(len(rows)) if i not in concept]
    assert part.images.shape == full.images.shape and bool(torch.isnan(part.images[others]).all())
    drawn = sum(counted)
    assert evals.evidence(state) is evals.evidence(state, erased_only=True)   # judged in full: kept whole
    assert sum(counted) == drawn + len(rows)
    # the grid leaves the tiles that were not drawn blank (white), and draws the others
    from PIL import Image
    import numpy as np

    w = part.images.shape[-1]                                    # tile = w: drawn at their own size
    p = image_grid([("part", part.images), ("full", full.images)], [r.cls for r in rows], tmp_path / "g.png", tile=w)
    g = np.asarray(Image.open(p).convert("L")).astype(float)
    left, top, pad = 170, 24, 3                                  # image_grid's layout
    tile = lambda row, j: g[top + row * (w + pad): top + row * (w + pad) + w, left + j * (w + pad): left + j * (w + pad) + w]
    assert (tile(0, others[0]) == 255).all() and not (tile(1, others[0]) == 255).all()
    assert np.array_equal(tile(0, concept[0]), tile(1, concept[0]))
