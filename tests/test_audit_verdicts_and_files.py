"""`revival audit` on the committed testbed: the verdict, its files, its exit codes, bad input."""
from __future__ import annotations

import json

import pytest
import torch

from revival.audit.run import AuditConfig, AuditResult, heldout_prompts
from revival.errors import RevivalError


@pytest.fixture(scope="module")
def testbed_release(tmp_path_factory):
    """The testbed UNet with every ff.net.2 pruned ConceptPrune-like (exact zeros), as a file."""
    from safetensors.torch import load_file, save_file

    from revival.release.masks import synthetic_prune_mask
    from revival.testbed import TESTBED_UNET_DIR

    root = tmp_path_factory.mktemp("audit")
    sd = load_file(str(TESTBED_UNET_DIR / "diffusion_pytorch_model.safetensors"))
    out = dict(sd)
    for i, (k, w) in enumerate(sorted(sd.items())):
        if k.endswith("ff.net.2.weight"):
            out[k] = w.masked_fill(synthetic_prune_mask(w, 0.08, seed=i), 0)
    save_file(out, str(root / "release.safetensors"))
    return root, TESTBED_UNET_DIR


def test_heldout_prompts_avoid_what_unlearning_used():
    from revival.testbed.text import CLASSES
    from revival.unlearn.conceptprune import concept_prompts

    rows = heldout_prompts(CLASSES, "sneaker", erased_images=12, preserved_per_class=2)
    used = set()
    for c in CLASSES:
        t, b = concept_prompts(c, CLASSES)
        used |= set(t) | set(b)
    assert not {r.prompt for r in rows} & used
    assert all(r.seed >= 1000 for r in rows) and len({(r.cls, r.seed) for r in rows}) == len(rows)
    assert sum(r.cls == "sneaker" for r in rows) == 12 and sum(r.cls == "bag" for r in rows) == 2
    assert len({r.prompt for r in rows if r.cls == "sneaker"}) >= 8      # synonyms x templates vary


def test_verdict_and_reports():
    drew = {"erased": 0.95, "erased_ci95": [0.86, 0.98], "floor": 0.5, "draws_concept": True}
    res = AuditResult("sneaker", 0.10, {"exposed": True, "erased": 0.1, "preserved": 0.9}, original=drew)
    ok = {"status": "ran", "erased": 0.1, "preserved": 0.9, "gain": 0.0, "gain_ci95": [-0.04, 0.05]}
    res.attacks = {n: dict(ok) for n in res.ladder}
    assert res.verdict == "pass" and "PASS" in res.markdown() and "PASS" in res.summary()
    d = res.to_dict()
    assert set(d) >= {"concept", "release", "original", "attacks", "verdict", "reasons", "limit", "largest_gain",
                      "revival_version", "date"} and "max_gain" not in d
    # an interval that straddles the limit: inconclusive, with the reason
    res.attacks["zeros"].update(gain=0.05, gain_ci95=[-0.05, 0.25])
    assert res.verdict == "inconclusive" and "straddles" in res.summary() and "[-0.05, +0.25]" in res.markdown()
    assert res.largest_gain == {"attacker": "zeros", "gain": 0.05, "gain_ci95": [-0.05, 0.25], "calibrated": False}
    # a fail when one attacker's interval lies wholly above the limit, whatever the others' intervals
    res.attacks["residual"].update(gain=0.3, gain_ci95=[0.15, 0.45])
    assert res.verdict == "fail" and "FAIL" in res.summary() and res.largest_gain["attacker"] == "residual"
    with pytest.raises(RevivalError, match="max-gain"):
        AuditConfig(max_gain=2)
    with pytest.raises(RevivalError, match="attacker must be one of"):
        AuditConfig(attackers=("oracle",))


def test_cli_audit_on_the_testbed(testbed_release, tmp_path, capsys):
    from revival.cli import main

    root, original = testbed_release
    out = tmp_path / "audit"
    rc = main(["audit", "--model", "testbed", "--release", str(root / "release.safetensors"), "--concept", "sneaker",
               "--original", str(original), "--out", str(out), "--attackers", "zeros", "reprune",
               "--erased-images", "4", "--preserved-images", "1"])
    text = capsys.readouterr()
    data = json.loads((out / "audit.json").read_text())
    assert (out / "audit.md").is_file() and (out / "grid.png").is_file() and (out / "model_card.md").is_file()
    # two attackers of the ladder: never a pass (the others did not run)
    assert data["verdict"] in ("fail", "inconclusive") and rc == {"fail": 3, "inconclusive": 4}[data["verdict"]]
    assert data["concept"] == "sneaker" and data["limit"] == 0.10 and data["release"]["exposed"] is True
    rel = data["release"]
    assert rel["erased_hits"][1] == 4 and rel["preserved_hits"][1] == 9 and len(rel["erased_ci95"]) == 2
    for name in ("zeros", "reprune"):
        a = data["attacks"][name]
        assert a["gain"] == pytest.approx(a["erased"] - rel["erased"], abs=1e-4)
        lo, hi = a["gain_ci95"]                      # paired over the same 4 images of the concept
        assert -1 <= lo <= a["gain"] <= hi <= 1
        assert 0 <= a["localisation"]["entry_auc"] <= 1 and a["signs"]["changed_true"] > 0
    # the zero-reading attacker reads the exact zeros: it finds exactly the changed positions
    assert data["attacks"]["zeros"]["localisation"]["entry_auc"] == 1.0
    assert "verdict" in text.out
    # an existing output is refused unless --overwrite
    rc = main(["audit", "--model", "testbed", "--release", str(root / "release.safetensors"), "--concept", "sneaker",
               "--out", str(out), "--attackers", "zeros"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["not pruned", "wrong model", "unknown concept", "no such release"])
def test_cli_audit_bad_input(case, testbed_release, tiny_unet, tmp_path, capsys):
    from revival.cli import main

    root, original = testbed_release
    release = {"not pruned": original, "wrong model": tiny_unet.pruned_dir,
               "unknown concept": root / "release.safetensors", "no such release": tmp_path / "nope"}[case]
    concept = "unicorn" if case == "unknown concept" else "sneaker"
    out = tmp_path / "audit"
    rc = main(["audit", "--model", "testbed", "--release", str(release), "--concept", concept, "--out", str(out),
               "--attackers", "zeros", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    expected = {"not pruned": "nothing to audit", "wrong model": "model", "unknown concept": "unknown concept",
                "no such release": "nope"}[case]
    assert expected in err
    assert not out.exists()


def test_the_audit_evaluates_each_distinct_state_once_and_grows_each_once(testbed_model):
    """Two attackers returning the same weights share one evaluation (by content, not by object);
    a state differing in one entry gets its own; a later look adds its images to each once."""
    from revival.audit.result import Evaluations

    pipe, state, clf = testbed_model
    rows = heldout_prompts(pipe.classes, "sneaker", erased_images=3, preserved_per_class=1)
    evals = Evaluations(pipe, rows, clf, "sneaker", AuditConfig(inference_steps=4))
    first = evals.evidence(state)
    copy = {k: v.clone() for k, v in state.items()}                 # other tensor objects, same bytes
    assert evals.evidence(copy) is first
    name = sorted(k for k in state if k.endswith("ff.net.2.weight"))[0]
    changed = {**state, name: state[name].clone().index_put_((torch.tensor([0]), torch.tensor([0])),
                                                             torch.tensor(0.0))}
    other = evals.evidence(changed)
    assert other is not first
    from revival.concepts.heldout import more_heldout_rows

    evals.more(more_heldout_rows("sneaker", 1000)(3, 5))
    assert len(first.outcomes) == 3 + 2 and len(other.outcomes) == 3 + 2
