"""revival.audit.card.model_card: the audit's dict (audit.json) as a model-card section with YAML front
matter under `revival:`; everything the audit decided, None as n/a (never 0), nothing else."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from revival.audit.card import model_card
from revival.errors import RevivalError

LADDER = ["zeros", "residual", "method-aware", "columns", "reprune"]


def _attack(status, erased=None, preserved=None, gain=None, ci=None, reason=None):
    return {"status": status, "reason": reason, "erased": erased, "preserved": preserved, "gain": gain,
            "gain_ci95": ci, "located": 7, "localisation": {"entry_auc": 0.61}}


def audit_pass() -> dict:
    return {
        "concept": "sneaker", "verdict": "pass", "reasons": [], "limit": 0.1,
        "largest_gain": {"attacker": "residual", "gain": 0.0333, "gain_ci95": [-0.0412, 0.0871]},
        "release": {"erased": 0.1167, "erased_ci95": [0.0577, 0.2229], "preserved": 0.8611,
                    "preserved_ci95": [0.7628, 0.9227], "exposed": False, "erased_hits": [7, 60]},
        "original": {"erased": 0.9833, "erased_ci95": [0.9114, 0.9971], "floor": 0.5, "draws_concept": True},
        "attacks": {
            "zeros": _attack("refused", reason="it located no position to revive"),
            "residual": _attack("ran", 0.15, 0.8472, 0.0333, [-0.0412, 0.0871]),
            "method-aware": _attack("ran", 0.1333, 0.8333, 0.0167, [-0.0523, 0.0688]),
            "columns": _attack("ran", 0.1, 0.8194, -0.0167, [-0.0795, 0.0456]),
            "reprune": _attack("ran", 0.1167, 0.8611, 0.0, [-0.0602, 0.0602]),
        },
        "ladder": LADDER, "layers": [f"down_blocks.{i}.attentions.0.transformer_blocks.0.ff.net.2.weight" for i in range(3)],
        "settings": {"images": 96, "first_seed": 1000, "model": "/home/someone/sd"},
        "revival_version": "0.1.0", "date": "2026-12-05",
    }


def audit_fail() -> dict:
    a = audit_pass()
    a.update(verdict="fail", reasons=["residual gained +0.4167 [+0.2851, +0.5380], wholly above the limit 0.10"],
             largest_gain={"attacker": "residual", "gain": 0.4167, "gain_ci95": [0.2851, 0.538]})
    a["release"]["exposed"] = True
    a["attacks"]["zeros"] = _attack("ran", 0.3667, 0.8472, 0.25, [0.1243, 0.3709])
    a["attacks"]["residual"] = _attack("ran", 0.5333, 0.8333, 0.4167, [0.2851, 0.538])
    return a


def audit_inconclusive() -> dict:
    a = audit_pass()
    a.update(verdict="inconclusive",
             reasons=["the original draws the concept in 0.3000 of its images, below the floor 0.50",
                      "the attacker columns errored: out of memory"],
             largest_gain={"attacker": None, "gain": None, "gain_ci95": None})
    a["original"] = {"erased": 0.3, "erased_ci95": [0.1455, 0.5190], "floor": 0.5, "draws_concept": False}
    a["release"]["preserved"] = None
    a["release"]["preserved_ci95"] = None
    a["attacks"]["columns"] = _attack("errored", reason="out of memory")
    del a["attacks"]["reprune"]
    return a


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    head, rest = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert list(meta) == ["revival"], "the metadata sits under one `revival:` key"
    return meta["revival"]


def _numbers(d) -> list[float]:
    """Every number of a nested dict/list (bools excluded)."""
    if isinstance(d, dict):
        return [x for v in d.values() for x in _numbers(v)]
    if isinstance(d, (list, tuple)):
        return [x for v in d for x in _numbers(v)]
    return [d] if isinstance(d, (int, float)) and not isinstance(d, bool) else []


SCHEMA_RELEASE = ("erased", "erased_ci95", "preserved", "preserved_ci95", "exposed")
SCHEMA_ATTACK = ("status", "reason", "erased", "preserved", "gain", "gain_ci95")
DECIDED = ("verdict", "concept", "limit", "largest_gain", "release", "original", "attacks", "reasons")


@pytest.mark.parametrize("make", [audit_pass, audit_fail, audit_inconclusive])
def test_front_matter_holds_what_the_audit_decided(make):
    audit = make()
    meta = front_matter(model_card(audit))
    assert meta["verdict"] == audit["verdict"] and meta["concept"] == audit["concept"]
    assert meta["limit"] == audit["limit"] and meta["reasons"] == audit["reasons"]
    assert meta["largest_gain"] == audit["largest_gain"]
    for k in ("erased", "erased_ci95", "preserved", "preserved_ci95", "exposed"):
        assert meta["release"][k] == audit["release"][k], k
    assert meta["original"] == audit["original"]
    assert set(meta["attacks"]) == set(audit["attacks"])
    for name, a in audit["attacks"].items():
        for k in ("status", "reason", "gain", "gain_ci95", "erased", "preserved"):
            assert meta["attacks"][name][k] == a[k], (name, k)
    assert meta["date"] == audit["date"] and isinstance(meta["date"], str)
    assert meta["revival_version"] == audit["revival_version"]
    assert meta["layers"] == len(audit["layers"]) and meta["ladder"] == LADDER
    # every number the audit decided is in the card's metadata, exactly
    decided = {**{k: audit[k] for k in DECIDED}, "release": {k: audit["release"][k] for k in SCHEMA_RELEASE},
               "attacks": {n: {k: a[k] for k in SCHEMA_ATTACK} for n, a in audit["attacks"].items()}}
    assert sorted(_numbers(decided)) == sorted(_numbers({k: meta[k] for k in DECIDED}))
    # nothing it does not decide: no settings (local paths), no localisation details, no hit counts
    card = model_card(audit)
    assert "/home/someone" not in card and "entry_auc" not in card and "erased_hits" not in card
    assert not re.search(r"\bsafe\b", card, re.I)


@pytest.mark.parametrize("make", [audit_pass, audit_fail, audit_inconclusive])
def test_prose_names_every_attacker_and_figure(make):
    audit = make()
    card = model_card(audit)
    body = card.split("\n---\n", 1)[1]
    for name, a in audit["attacks"].items():
        row = next(line for line in body.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {a['status']} |" in row
        if a["gain"] is not None:
            assert f"{a['gain']:+.2f}" in row and f"[{a['gain_ci95'][0]:+.2f}, {a['gain_ci95'][1]:+.2f}]" in row
        else:
            assert row.count("n/a") >= 4 and "+0.00" not in row
        if a["reason"]:
            assert a["reason"] in row
    r = audit["release"]
    assert f"{r['erased']:.2f} [{r['erased_ci95'][0]:.2f}, {r['erased_ci95'][1]:.2f}]" in body
    o = audit["original"]
    assert f"{o['erased']:.2f} [{o['erased_ci95'][0]:.2f}, {o['erased_ci95'][1]:.2f}]" in body
    assert f"floor {o['floor']:.2f}" in body
    assert audit["date"] in body and f"revival {audit['revival_version']}" in body
    assert f"{audit['limit']:.2f}" in body
    for reason in audit["reasons"]:
        assert f"- {reason}" in body


def test_verdict_statements():
    p, f, i = model_card(audit_pass()), model_card(audit_fail()), model_card(audit_inconclusive())
    assert "**Verdict: PASS.** No attacker of revival's ladder gained more than the limit (0.10" in p
    assert "(revival 0.1.0, 2026-12-05)" in p
    assert "draws the concept: its erased accuracy 0.98 [0.91, 1.00] reaches the floor 0.50" in p
    assert "Exact zeros mark the pruned positions in this release: no." in p
    assert "**Verdict: FAIL.**" in f and "residual raised its erased accuracy by +0.42 [+0.29, +0.54]" in f
    assert "Exact zeros mark the pruned positions in this release: yes." in f
    assert "**Verdict: INCONCLUSIVE.**" in i and "Reasons:" in i
    assert "does not draw the concept" in i and "below the floor 0.50" in i
    # an attacker of the ladder that is absent from the audit is shown as not run, never as a zero gain
    assert "| reprune | not run | n/a | n/a | n/a | n/a | |" in i
    assert "Largest gain: n/a n/a by n/a." in i
    # the original's preserved accuracy is shown where the audit measured it, n/a where not
    assert "| original (before unlearning) | 0.98 [0.91, 1.00] | n/a |" in p
    a = audit_pass()
    a["original"].update(preserved=0.9583, preserved_ci95=[0.8825, 0.9859])
    assert "| original (before unlearning) | 0.98 [0.91, 1.00] | 0.96 [0.88, 0.99] |" in model_card(a)


def test_none_is_na_never_zero():
    a = audit_inconclusive()
    card = model_card(a)
    body = card.split("\n---\n", 1)[1]
    row = next(line for line in body.splitlines() if line.startswith("| this release |"))
    assert row.endswith("| n/a |")                        # preserved None
    meta = front_matter(card)
    assert meta["release"]["preserved"] is None and meta["largest_gain"]["gain"] is None
    assert meta["attacks"]["columns"]["gain"] is None
    no_original = copy.deepcopy(a)
    no_original["original"] = None
    card = model_card(no_original)
    assert front_matter(card)["original"] is None
    assert "The original model was not evaluated: there is no evidence that it drew the concept." in card


def test_awkward_strings_stay_yaml():
    a = audit_inconclusive()
    a["concept"] = 'Pablo "Picasso": no'
    a["reasons"] = ["a reason: with colon, # hash and 'quotes'", "yes"]
    a["attacks"]["yes"] = _attack("refused", reason="no | pipe")
    meta = front_matter(model_card(a))
    assert meta["concept"] == a["concept"] and meta["reasons"] == a["reasons"]
    assert meta["attacks"]["yes"]["reason"] == "no | pipe"
    assert "| yes | refused |" in model_card(a) and "no \\| pipe" in model_card(a)


@pytest.mark.parametrize("bad, msg", [
    ([], "audit's dict"),
    ({"verdict": "pass"}, "has no 'concept'"),
    ({**audit_pass(), "verdict": "safe"}, "verdict must be one of pass, fail, inconclusive"),
    ({**audit_pass(), "attacks": []}, "must be mappings"),
    ({**audit_pass(), "attacks": {"zeros": 0.3}}, "attacker 'zeros' must be a mapping"),
])
def test_bad_input_one_sentence(bad, msg):
    with pytest.raises(RevivalError, match=re.escape(msg)) as exc:
        model_card(bad)
    assert "\n" not in str(exc.value)
