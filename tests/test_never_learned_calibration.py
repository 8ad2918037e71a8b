"""The never-learned model as the measure of every gain: calibrated verdicts, the relearning
verdict, the checks on a never-learned model, and dense releases."""
from __future__ import annotations

import json

import pytest
import torch

from revival.attack.attackers import ATTACKERS
from revival.errors import RevivalError
from revival.audit.verdict import combine, decide, decide_relearning

DREW = {"draws_concept": True, "erased": 0.95, "floor": 0.5}


def _ran(gain, gci, excess=None, eci=None):
    return {"status": "ran", "gain": gain, "gain_ci95": gci, "excess": excess, "excess_ci95": eci}


def test_an_attack_that_creates_the_concept_in_the_never_learned_model_too_is_no_revival():
    # uncalibrated, reprune's +0.33 fails the release; beside a never-learned model that the
    # same attack brings to the same level, it revives nothing
    attacks = {n: _ran(0.0, [-0.02, 0.03], 0.0, [-0.03, 0.03]) for n in ATTACKERS}
    attacks["reprune"] = _ran(0.33, [0.2, 0.45], 0.0, [-0.06, 0.06])
    assert decide(attacks, ATTACKERS, 0.10, DREW)[0] == "fail"
    nl = {"erased": 0.0, "excess": 0.0, "excess_ci95": [-0.05, 0.05]}
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned=nl)
    assert v == "pass" and "never-learned" in why[0]
    # an excess wholly above the limit fails, and says it is beyond the never-learned model
    attacks["reprune"] = _ran(0.5, [0.3, 0.6], 0.4, [0.25, 0.55])
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned=nl)
    assert v == "fail" and "reprune" in why[0] and "beyond the never-learned" in why[0]
    # an attack whose never-learned counterpart did not run has no calibrated interval: no pass
    attacks["reprune"] = _ran(0.0, [-0.02, 0.03])
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned=nl)
    assert v == "inconclusive" and any("never-learned model did not run" in r for r in why)


def test_a_release_that_draws_the_concept_beyond_the_never_learned_model_fails_by_itself():
    attacks = {n: _ran(0.0, [-0.02, 0.03], 0.0, [-0.03, 0.03]) for n in ATTACKERS}
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned={"excess": 0.4, "excess_ci95": [0.25, 0.55]})
    assert v == "fail" and "the release itself" in why[0]
    v, _ = decide(attacks, ATTACKERS, 0.10, DREW, never_learned={"excess": 0.08, "excess_ci95": [-0.01, 0.2]})
    assert v == "inconclusive"
    # a never-learned model that is the release, or that draws the concept, calibrates nothing
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned={"excess": 0.0, "excess_ci95": [-0.05, 0.05],
                                                                   "erased": 0.0, "is_release": True})
    assert v == "inconclusive" and "release itself" in why[0]
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned={"excess": 0.0, "excess_ci95": [-0.05, 0.05],
                                                                   "erased": 0.9})
    assert v == "inconclusive" and "it learned the concept" in why[0]
    # a never-learned model whose images were not judged calibrates nothing
    v, why = decide(attacks, ATTACKERS, 0.10, DREW, never_learned={"path": "x"})
    assert v == "inconclusive" and any("nothing to calibrate" in r for r in why)


def test_the_relearning_verdict_needs_the_never_learned_model_and_every_budget():
    ok = {"images": 4, "steps": 20, "status": "ran", "excess": 0.02, "excess_ci95": [-0.05, 0.08]}
    assert decide_relearning({"never_learned": "nl", "budgets": [ok, {**ok, "images": 16}]}, 0.1)[0] == "pass"
    assert decide_relearning(None, 0.1)[0] == "inconclusive"
    assert decide_relearning({"never_learned": "nl", "budgets": []}, 0.1)[0] == "inconclusive"
    alone = {"images": 4, "steps": 20, "status": "ran", "excess": None, "excess_ci95": None}
    v, why = decide_relearning({"never_learned": None, "budgets": [alone]}, 0.1)
    assert v == "inconclusive" and "never-learned" in why[0]
    crashed = {"images": 16, "steps": 50, "status": "errored", "reason": "boom"}
    assert decide_relearning({"never_learned": "nl", "budgets": [ok, crashed]}, 0.1)[0] == "inconclusive"
    high = {**ok, "excess": 0.4, "excess_ci95": [0.2, 0.55]}
    v, why = decide_relearning({"never_learned": "nl", "budgets": [ok, high]}, 0.1)
    assert v == "fail" and "K=4" in why[0]
    # a release that relearning breaks (it no longer draws the other classes) shows nothing by its low score
    broken = {**ok, "release_preserved": 0.2, "release_preserved_ci95": [0.1, 0.35], "never_learned_preserved": 0.95}
    v, why = decide_relearning({"never_learned": "nl", "budgets": [broken]}, 0.1)
    assert v == "inconclusive" and "breaks the release" in why[0]
    working = {**broken, "release_preserved": 0.8, "release_preserved_ci95": [0.6, 0.9]}
    assert decide_relearning({"never_learned": "nl", "budgets": [working]}, 0.1)[0] == "pass"
    wide = {**ok, "excess": 0.06, "excess_ci95": [-0.02, 0.14]}
    assert decide_relearning({"never_learned": "nl", "budgets": [wide]}, 0.1)[0] == "inconclusive"
    # the yardstick itself: the release compared with itself, a never-learned model that learned the
    # concept, an original the judge never saw draw it -- no pass, whatever the curve says
    curve = {"never_learned": "nl", "budgets": [ok]}
    drew = {"draws_concept": True, "erased": 0.95, "floor": 0.5}
    assert decide_relearning(curve, 0.1, {"erased": 0.0}, drew)[0] == "pass"
    v, why = decide_relearning(curve, 0.1, {"erased": 0.0, "is_release": True}, drew)
    assert v == "inconclusive" and "release itself" in why[0]
    v, why = decide_relearning(curve, 0.1, {"erased": 0.8}, drew)
    assert v == "inconclusive" and "it learned the concept" in why[0]
    v, why = decide_relearning(curve, 0.1, {"erased": 0.0}, {"draws_concept": False, "erased": 0.1, "floor": 0.5})
    assert v == "inconclusive" and "judge cannot see" in why[0]


def test_the_threat_picks_the_verdict():
    p, f, i = ("pass", ["a"]), ("fail", ["b"]), ("inconclusive", ["c"])
    assert combine(p, f, "weights") == p and combine(p, f, "relearn") == f
    assert combine(p, f, "both")[0] == "fail" and combine(p, i, "both")[0] == "inconclusive"
    assert combine(p, p, "both")[0] == "pass"
    assert combine(i, p, "both")[1] == ["weights: c", "relearning: a"]


def _nl_folder(tmp_path, record: dict | None, name="testbed.json"):
    from revival.testbed.pipeline import TESTBED_UNET_DIR
    import shutil

    shutil.copytree(TESTBED_UNET_DIR, tmp_path / "nl" / "unet")
    if record is not None:
        (tmp_path / "nl" / name).write_text(json.dumps(record))
    return tmp_path / "nl"


def test_a_never_learned_model_must_say_it_never_learned_the_audited_concept(tmp_path):
    from revival.audit.never_learned import check_never_learned, load_never_learned
    from revival.testbed.pipeline import TESTBED_UNET_DIR

    with pytest.raises(RevivalError, match="does not say which concept"):
        check_never_learned(_nl_folder(tmp_path / "a", None), "sneaker")
    with pytest.raises(RevivalError, match=r"never learned 'coat' \(testbed.json\), not 'sneaker'"):
        check_never_learned(_nl_folder(tmp_path / "b", {"without": "coat"}), "sneaker")
    with pytest.raises(RevivalError, match="stage 3"):
        check_never_learned(_nl_folder(tmp_path / "c", {"without": "sneaker", "stage3_task_steps": 900}), "sneaker")
    good = _nl_folder(tmp_path / "d", {"without": "sneaker"}, "never_learned.json")
    assert check_never_learned(good, "sneaker") == good / "unet"
    assert check_never_learned(good / "unet", "sneaker") == good / "unet"
    # another architecture: the model has a tensor the never-learned model lacks
    from revival.io import load_checkpoint

    state = dict(load_checkpoint(TESTBED_UNET_DIR).tensors)
    assert set(load_never_learned(good, "sneaker", state)) == set(state)
    state["extra.weight"] = torch.zeros(2, 2)
    with pytest.raises(RevivalError, match="not of the model's architecture"):
        load_never_learned(good, "sneaker", state)


def test_relearning_draws_are_pooled_image_for_image_and_keep_their_own_figures():
    from types import SimpleNamespace

    from revival.attack.attackers.relearn import relearn_images
    from revival.audit.result import Evidence, PooledEvidence
    from revival.intervals import Proportion

    def ev(outcomes, hits):
        return Evidence(SimpleNamespace(preserved=Proportion(hits, 10), valid_share=1.0, images=None), outcomes)

    release = PooledEvidence([ev([1, 1, 0], 9), ev([0, 0, 0], 8)])
    nl = PooledEvidence([ev([1, 0, 0], 10), ev([0, 0, 1], 10)])
    a, b = release.accuracy(), nl.accuracy()
    # draw 0's images first, then draw 1's: the release's k-th outcome pairs with the never-learned model's k-th
    assert a.erased_outcomes == (1, 1, 0, 0, 0, 0) and b.erased_outcomes == (1, 0, 0, 0, 0, 1)
    assert (a.erased.hits, a.erased.n) == (2, 6) and (a.preserved.hits, a.preserved.n) == (17, 20)
    assert release.draws() == [2 / 3, 0.0]
    # a draw's evidence grown by a later look is read as it stands
    release.parts[1].add(SimpleNamespace(valid_share=0.5), [1])
    assert release.accuracy().erased_outcomes[-1] == 1 and release.accuracy().valid_share == round(2.5 / 3, 4)
    with pytest.raises(ValueError):
        PooledEvidence([])
    # each draw relearns from its own pick of the test split
    d0, d1 = (relearn_images(True, "sneaker", 4, None, seed=s) for s in (0, 1))
    assert d0.shape == d1.shape and not torch.equal(d0, d1)
    assert torch.equal(d0, relearn_images(True, "sneaker", 4, None, seed=0))
    # and each draw needs images of its own: fewer sets than draws, or a draw outside them, is refused
    from revival.audit.relearning import relearner
    from revival.audit.run import AuditConfig

    cfg = AuditConfig(threat="relearn", relearn_draws=2)
    with pytest.raises(RevivalError, match="one image set per draw"):
        relearner(None, "sneaker", [d0], cfg)
    with pytest.raises(RevivalError, match="one image set per draw"):
        relearner(None, "sneaker", d0, cfg)
    with pytest.raises(RevivalError, match="outside"):
        relearner(None, "sneaker", [d0, d1], cfg)(None, None, draw=2)


def test_a_dense_release_is_attacked_in_every_feed_forward_linear():
    from revival.release.layers import audit_layers, is_dense_change

    g = torch.Generator().manual_seed(0)
    model = {f"down.{i}.transformer_blocks.0.ff.net.2.weight": torch.randn(4, 8, generator=g) for i in range(3)}
    model.update({f"down.{i}.transformer_blocks.0.ff.net.0.proj.weight": torch.randn(16, 4, generator=g) for i in range(3)})
    model.update({f"down.{i}.transformer_blocks.0.attn1.to_q.weight": torch.randn(4, 4, generator=g) for i in range(3)})
    dense = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in model.items()}
    assert is_dense_change(model, dense)
    assert sorted(audit_layers(model, dense)) == sorted(k for k in model if ".ff." in k)
    sparse = dict(model)
    k = next(iter(model))
    sparse[k] = model[k].clone()
    sparse[k][0, 0] = 0.0
    assert not is_dense_change(model, sparse)
    assert k in audit_layers(model, sparse) and not any("attn1" in n for n in audit_layers(model, sparse))


# ---------------------------------------------------------------- the audit beside the shipped never-learned model

def _audit(tmp_path, release, *extra, concept="sneaker", out="audit"):
    from revival.cli import main

    return main(["audit", "--model", "testbed", "--release", str(release), "--concept", concept,
                 "--out", str(tmp_path / out), "--erased-images", "12", "--max-erased-images", "12",
                 "--preserved-images", "1", "--quiet", *extra])


def test_the_never_learned_model_audited_as_a_release_gets_nothing_beyond_itself(tmp_path, capsys):
    from revival.audit.never_learned import shipped_never_learned

    nl = shipped_never_learned("sneaker")
    assert nl is not None, "the testbed ships the never-learned model of its demo concept"
    rc = _audit(tmp_path, nl / "unet", "--attackers", "zeros", "residual", "--threat", "both",
                "--relearn-budgets", "4x10")
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    # a retrain is a dense change: every feed-forward linear is attacked, and the report says so
    assert data["settings"]["scope"].startswith("dense")
    assert data["layers"] and all(".ff.net." in n for n in data["layers"])
    # calibrated by default on the shipped model; the same attack on the same weights gets exactly nothing more
    assert data["never_learned"]["path"] == str(nl) and data["never_learned"]["excess"] == 0.0
    assert data["never_learned"]["is_release"] is True   # and so no pass can come of it
    for a in data["attacks"].values():
        assert a["status"] == "ran" and a["excess"] == 0.0 and a["excess_ci95"][0] < 0 < a["excess_ci95"][1]
    (b,) = data["relearn"]["budgets"]
    assert (b["images"], b["steps"], b["excess"]) == (4, 10, 0.0)
    # the audit's default: 3 draws (own images and seed each), pooled: 3 x 12 pairs, per-draw figures kept
    assert data["relearn"]["draws"] == 3 and b["pairs"] == 36
    assert len(b["release_draws"]) == 3 and b["release_draws"] == b["never_learned_draws"]
    assert b["excess_ci95"][0] < 0 < b["excess_ci95"][1]
    # the release compared with itself: inconclusive, never a pass, however tight the pooled interval, and it says why
    assert data["relearn_verdict"]["verdict"] == "inconclusive"
    assert "release itself" in data["relearn_verdict"]["reasons"][0]
    # only 2 of the ladder's attackers ran: no pass for the weights, whatever they found
    assert data["weights_verdict"]["verdict"] == "inconclusive" and rc == 4
    card = (tmp_path / "audit" / "model_card.md").read_text()
    assert "never learned the concept" in card and "Relearning" in card


@pytest.mark.parametrize("case", ["another concept", "no record", "zero budget", "zero draws", "non-images",
                                  "too few images"])
def test_bad_calibration_input_is_refused_before_any_work(case, tmp_path, capsys):
    from revival.audit.never_learned import shipped_never_learned
    from revival.testbed.pipeline import TESTBED_UNET_DIR

    extra = []
    if case == "another concept":
        extra = ["--never-learned", str(shipped_never_learned("sneaker"))]
    elif case == "no record":
        extra = ["--never-learned", str(TESTBED_UNET_DIR)]
    elif case == "zero budget":
        extra = ["--threat", "relearn", "--relearn-budgets", "0x20"]
    elif case == "zero draws":
        extra = ["--threat", "relearn", "--relearn-budgets", "1x20", "--relearn-draws", "0"]
    else:
        folder = tmp_path / "imgs"
        folder.mkdir()
        from PIL import Image

        for i in range(2):
            Image.new("L", (16, 16), color=40 * i).save(folder / f"{i}.png")
        if case == "non-images":
            (folder / "notes.txt").write_text("x")
        extra = ["--threat", "both", "--relearn-budgets", "4x10", "--relearn-images", str(folder)]
    concept = "coat" if case == "another concept" else "sneaker"
    rc = _audit(tmp_path, TESTBED_UNET_DIR, *extra, concept=concept)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert {"another concept": "never learned 'sneaker'", "no record": "does not say which concept",
            "zero budget": "positive", "zero draws": "--relearn-draws", "non-images": "not images", "too few images": "holds only 2"}[case] in err
    assert not (tmp_path / "audit").exists()


def test_relearning_a_stable_diffusion_release_needs_a_folder_of_images(tmp_path, capsys):
    from tiny_models import make_tiny_sd

    from revival.cli import main

    sd = make_tiny_sd(tmp_path)
    csv = tmp_path / "p.csv"
    csv.write_text("case_number,prompt,class,seed\n0,a church,church,1000\n1,a golf ball,golf ball,1000\n")
    out = tmp_path / "audit"
    capsys.readouterr()   # the tiny model's own writing
    rc = main(["audit", "--model", str(sd), "--release", str(sd / "unet"), "--concept", "church", "--prompts", str(csv),
               "--out", str(out), "--device", "cpu", "--threat", "relearn", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--relearn-images" in err and err.count("\n") == 1 and not out.exists()
