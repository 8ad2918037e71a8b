"""The attackers of `revival.attack.attackers`: one parametrized run of every attacker on small
structured matrices, then each attacker's own idea, the localisation scores and the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from revival.attack.attackers import (ATTACKERS, AttackContext, Located, auc, concentrated_columns, localisation,
                                      run_attacker, top_fraction, true_mask)
from revival.attack.attackers.columns import column_misfit, predict_columns
from revival.attack.attackers.method_aware import method_scores
from revival.attack.attackers.reprune import reprune_mask
from revival.defense.obfuscate import obfuscate_matrix
from revival.errors import RevivalError
from revival.release.masks import synthetic_prune_mask

NAME = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"
PROJ = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"


def _block(seed: int = 0, out: int = 32, hidden: int = 128):
    """A GEGLU feed-forward whose output columns follow their units' input rows (as in trained
    FFNs), pruned ConceptPrune-like; returns (original, pruned, mask, a_target, a_base)."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(2 * hidden, out, generator=g) / out ** 0.5
    scale = torch.randn(hidden, generator=g).sign() * (0.5 + torch.rand(hidden, generator=g))
    w = (proj[:hidden].T * scale[None, :]) + 0.3 * proj[hidden:].T + 0.05 * torch.randn(out, hidden, generator=g)
    a_base = torch.exp(0.3 * torch.randn(3, hidden, generator=g))
    a_target = a_base.clone()
    concept = torch.randperm(hidden, generator=g)[: hidden // 10]
    a_target[:, concept] *= 4.0
    mask = torch.zeros(out, hidden, dtype=torch.bool)
    k = max(1, int(0.05 * hidden))
    for s in range(3):
        score = w.abs() * a_target[s]
        step = torch.zeros_like(mask)
        step.scatter_(1, score.topk(k, dim=1).indices, True)
        mask |= step & (a_target[s] > a_base[s])[None]
    original = {NAME: w, PROJ: proj}
    pruned = {NAME: w.masked_fill(mask, 0), PROJ: proj}
    return original, pruned, mask, a_target, a_base


def _context(a_target, a_base, **kw):
    stats = {"target": {NAME: a_target}, "base": {NAME: a_base}}
    return AttackContext(prompts=(["t"], ["b"]), activations=lambda p: stats["target" if p == ["t"] else "base"],
                         skill_ratio=0.05, steps=3, **kw)


@pytest.mark.parametrize("name", ATTACKERS)
def test_every_attacker_runs_and_changes_only_what_it_located(name):
    original, pruned, mask, a_t, a_b = _block(1)
    if name == "replay":   # what it reads: fills drawn from a known seed (the old public default, 0)
        from revival.defense import apply_defense

        pruned = {**pruned, **apply_defense(pruned, [NAME], "gaussian", 0)[0]}
    ctx = _context(a_t, a_b)
    updates, res = run_attacker(name, pruned, [NAME], ctx, truth={NAME: mask})
    assert res.attacker == name and res.located > 0 and res.localisation is not None
    d = res.to_dict()
    assert set(d["localisation"]) >= {"entry_auc", "column_auc", "precision_at_k", "precision", "recall"}
    assert json.dumps(d)
    out = updates[NAME]
    assert out.dtype == pruned[NAME].dtype and out.shape == pruned[NAME].shape
    changed = out != pruned[NAME]
    assert int(changed.sum()) == res.revived > 0
    # zeros that were not located may be revived too (the zero-reading attack reads every zero)
    assert not bool((changed & ~(mask | (pruned[NAME] == 0)) & ~_located(name, pruned, ctx)).any())
    again, _ = run_attacker(name, pruned, [NAME], ctx)
    assert torch.equal(again[NAME], out)                    # same seed, same bytes


def _located(name, tensors, ctx):
    from revival.attack.attackers import LOCATORS

    return LOCATORS.get(name)(tensors, [NAME], ctx).masks[NAME]


def test_zeros_and_reprune_read_exact_zeros_and_the_smallest_weights():
    original, pruned, mask, a_t, a_b = _block(2)
    _, res = run_attacker("zeros", pruned, [NAME], truth={NAME: mask})
    assert res.located == int(mask.sum()) and res.localisation.entry_auc == 1.0 and res.localisation.precision == 1.0
    w = original[NAME]
    m = reprune_mask(w, 0.1, "global")
    assert int(m.sum()) == round(0.1 * w.numel())
    assert float(w.abs()[m].max()) <= float(w.abs()[~m].min())
    r = reprune_mask(w, 0.1, "row")
    assert bool((r.sum(1) == round(0.1 * w.shape[1])).all())
    assert bool(reprune_mask(pruned[NAME], 0.01)[mask].all())      # exact zeros always included
    with pytest.raises(RevivalError, match="mode"):
        reprune_mask(w, 0.1, "column")


def test_method_aware_finds_the_concept_units_from_activations_alone():
    original, pruned, mask, a_t, a_b = _block(3)
    filled, _ = obfuscate_matrix(pruned[NAME], "row", torch.Generator().manual_seed(0))
    release = {**pruned, NAME: filled}
    _, res = run_attacker("method-aware", release, [NAME], _context(a_t, a_b), truth={NAME: mask})
    assert res.localisation.column_auc > 0.9 and res.localisation.entry_auc > 0.8
    # without concept activations it has no signal
    flat = torch.ones_like(a_t)
    s = method_scores(filled, flat, flat, 3)
    assert float(s.max()) == 0.0
    with pytest.raises(RevivalError, match="prompts"):
        run_attacker("method-aware", release, [NAME], AttackContext())


def test_columns_predicts_whole_columns_from_side_information():
    g = torch.Generator().manual_seed(4)
    out, hidden = 32, 128
    proj = torch.randn(2 * hidden, out, generator=g) / out ** 0.5
    shared = 0.8 * proj[:hidden].T + 0.3 * proj[hidden:].T              # one map for every unit
    w = shared + 0.05 * torch.randn(out, hidden, generator=g)
    side = proj.reshape(2, hidden, out).permute(0, 2, 1)
    hide = torch.zeros(hidden, dtype=torch.bool)
    hide[::7] = True
    est = predict_columns(w, side, hide)
    assert torch.equal(est[:, ~hide], w[:, ~hide])
    agree = float(((est[:, hide] > 0) == (w[:, hide] > 0)).float().mean())
    assert agree > 0.8, agree
    # a per-unit sign (as in trained FFNs) is not predictable from a shared map: chance
    flip = torch.where(torch.rand(hidden, generator=g) < 0.5, -1.0, 1.0)
    est2 = predict_columns(w * flip, side, hide)
    agree2 = float(((est2[:, hide] > 0) == ((w * flip)[:, hide] > 0)).float().mean())
    assert 0.3 < agree2 < 0.7, agree2
    # columns replaced by noise stop fitting their side vectors: the misfit finds them
    noisy = w.clone()
    noisy[:, hide] = torch.randn(out, int(hide.sum()), generator=g) * w.std()
    assert auc(column_misfit(noisy, side), hide) > 0.9


def test_auc_localisation_and_helpers():
    assert auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([False, False, True, True])) == 1.0
    assert auc(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([False, True, False, True])) == 0.5
    assert auc(torch.tensor([0.9, 0.1]), torch.tensor([False, True])) == 0.0
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 2] = True
    mask[0, 4] = True
    assert concentrated_columns(mask).tolist() == [False, False, True, False, False, False]
    t = top_fraction(torch.arange(10.0).view(2, 5), 0.2)
    assert t.flatten().nonzero().flatten().tolist() == [8, 9]
    score = mask.float() + 0.01 * torch.arange(24.0).view(4, 6)
    loc = localisation(Located({"a": mask}, {"a": score}), {"a": mask}, ["a"])
    assert loc.entry_auc == 1.0 and loc.precision == loc.recall == loc.precision_at_k == 1.0
    assert loc.base_rate == pytest.approx(5 / 24)
    o = {"a": torch.ones(2, 2)}
    assert true_mask(o, {"a": torch.tensor([[1.0, 0.0], [1.0, 2.0]])}, ["a"])["a"].tolist() == [[False, True], [False, True]]
    with pytest.raises(RevivalError, match="shape"):
        true_mask(o, {"a": torch.ones(3, 2)}, ["a"])
    with pytest.raises(RevivalError, match="attacker must be one of"):
        run_attacker("oracle", o, ["a"])
    with pytest.raises(RevivalError, match="fraction"):
        AttackContext(fraction=0.9)


def test_cli_attack_with_a_named_attacker(tiny_unet, tmp_path, capsys):
    from revival.cli import main

    rc = main(["attack", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "rev"), "--attacker", "reprune", "--quiet",
               "--original", str(tiny_unet.original_dir)])
    assert rc == 0
    rep = json.loads((tmp_path / "rev.report.json").read_text())
    assert rep["attacker"]["attacker"] == "reprune" and rep["attacker"]["revived"] > 0
    # reprune reads every exact zero, so against the zeros release it finds every pruned position
    assert rep["attacker"]["localisation"]["recall"] == 1.0
    rc = main(["attack", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "m"), "--attacker", "method-aware"])
    assert rc == 2 and "--concept" in capsys.readouterr().err and not (tmp_path / "m").exists()
    rc = main(["attack", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "x"), "--attacker", "oracle"])
    assert rc == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("shape", [(16, 64, 2), (40, 30, 2)])   # primal form / kernel form
def test_column_map_leave_one_out_residuals_equal_refits(shape):
    """fit_column_map's closed-form leave-one-out residuals equal the residuals of refitting the
    map without each column, in both the primal and the kernel form."""
    from revival.attack.attackers.columns import fit_column_map

    out, n, d = shape
    g = torch.Generator().manual_seed(0)
    w, side = torch.randn(out, n, generator=g), torch.randn(d, out, n, generator=g)
    sus = torch.zeros(n, dtype=torch.bool)
    sus[:5] = True
    full, res = fit_column_map(w, side, sus, loo=True)
    assert torch.equal(full[:, ~sus], w[:, ~sus]) and res.shape == (out, n - 5)
    for t, i in enumerate((~sus).nonzero().squeeze(1).tolist()[:8]):
        alone = sus.clone()
        alone[i] = True
        refit, _ = fit_column_map(w, side, alone)
        assert torch.allclose(w[:, i].double() - refit[:, i].double(), res[:, t], atol=1e-5)
