"""The defenses of `revival.defense` beyond Gaussian obfuscation: resample (the default) and decoy."""
from __future__ import annotations

import json

import pytest
import torch

from revival.defense import DEFAULT_DEFENSE, DEFENSES, apply_defense, get_defense
from revival.defense.decoy import decoy, decoy_positions
from revival.defense.resample import resample, resample_matrix
from revival.errors import RevivalError

NAME = "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"
PROJ = "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"


def _pruned(seed=0, out=48, hidden=192, hot=6):
    """A GEGLU block pruned with `hot` concentrated columns (60% of rows) plus scattered entries."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(2 * hidden, out, generator=g) / out ** 0.5
    w = 0.5 * proj[:hidden].T + 0.05 * torch.randn(out, hidden, generator=g)
    mask = torch.rand(out, hidden, generator=g) < 0.01
    cols = torch.randperm(hidden, generator=g)[:hot]
    mask[:, cols] |= torch.rand(out, hot, generator=g) < 0.6
    return {NAME: w.masked_fill(mask, 0), PROJ: proj}, mask, cols


def test_resample_replaces_hot_units_whole_and_nothing_else():
    t, mask, cols = _pruned()
    w = t[NAME]
    upd, res = resample(t, [NAME], seed=1, hot="column")    # no gate bias to retire with: replaced on request
    out = upd[NAME]
    hot = torch.zeros(w.shape[1], dtype=torch.bool)
    hot[cols] = True
    assert res.layers[0].hot_columns == len(cols) and PROJ not in upd          # inputs kept
    assert not bool((out == 0).any())                                            # no zero left to read
    assert bool((out[:, hot] != w[:, hot]).all())                                # hot units: every entry redrawn
    keep = ~mask & ~hot[None, :]
    assert torch.equal(out[keep], w[keep])                                       # everything else bit-identical
    assert res.layers[0].survivors_changed == int((~mask & hot[None, :]).sum())
    # the redrawn units carry nothing of their old direction
    old = w[:, hot].masked_fill(mask[:, hot], 0)
    cos = torch.nn.functional.cosine_similarity(out[:, hot], old, dim=0)
    assert float(cos.abs().mean()) < 0.3
    again, _ = resample(t, [NAME], seed=1, hot="column")
    other, _ = resample(t, [NAME], seed=2, hot="column")
    assert torch.equal(again[NAME], out) and not torch.equal(other[NAME], out)
    d = res.to_dict()
    assert d["method"] == "resample" and d["totals"]["hot_columns"] == len(cols) and json.dumps(d)


def test_resample_fresh_units_redraws_their_input_rows_only():
    t, mask, cols = _pruned(3)
    upd, res = resample(t, [NAME], seed=0, fresh_units=True)
    hidden = t[NAME].shape[1]
    p_old, p_new = t[PROJ], upd[PROJ]
    hot = torch.zeros(hidden, dtype=torch.bool)
    hot[cols] = True
    rows = torch.cat([hot, hot])                          # value and gate rows of each hot unit
    assert torch.equal(p_new[~rows], p_old[~rows]) and bool((p_new[rows] != p_old[rows]).all())
    assert p_new.dtype == p_old.dtype and res.layers[0].side
    # fresh rows follow the other units' statistics
    assert p_new[rows].std().item() == pytest.approx(p_old[~rows].std().item(), rel=0.3)


def test_resample_retire_closes_the_hot_units_and_keeps_the_rest_of_the_block():
    """Retired units write nothing for any input: the real diffusers feed-forward block computes
    exactly what it computes with those units' output columns set to zero; nothing else changes."""
    from diffusers.models.attention import FeedForward

    t, mask, cols = _pruned(5)
    hidden, out_dim = t[NAME].shape[1], t[NAME].shape[0]
    bname = PROJ[: -len("weight")] + "bias"
    t[bname] = 0.1 * torch.randn(2 * hidden, generator=torch.Generator().manual_seed(9))
    upd, res = resample(t, [NAME], seed=0, retire=True)
    hot = torch.zeros(hidden, dtype=torch.bool)
    hot[cols] = True
    assert res.layers[0].retired == len(cols) and res.to_dict()["totals"]["retired"] == len(cols)
    rows = torch.cat([hot, hot])
    assert torch.equal(upd[PROJ][~rows], t[PROJ][~rows]) and torch.equal(upd[bname][~rows], t[bname][~rows])
    assert bool((upd[PROJ][rows] != t[PROJ][rows]).all())          # nothing of the unit's own rows is left
    assert not bool((upd[NAME] == 0).any()) and not bool((upd[PROJ] == 0).any())

    def block(state):
        ff = FeedForward(out_dim, inner_dim=hidden, activation_fn="geglu", bias=True)
        ff.net[0].proj.weight.data, ff.net[0].proj.bias.data = state[PROJ].clone(), state[bname].clone()
        ff.net[2].weight.data = state[NAME].clone()
        ff.net[2].bias.data.zero_()
        return ff

    # the dead units' output columns look like the others: same value distribution, no zero
    cold_vals = upd[NAME][:, ~hot].flatten().abs()
    hot_vals = upd[NAME][:, hot].flatten().abs()
    for q in (0.1, 0.5, 0.9):
        assert float(hot_vals.quantile(q)) == pytest.approx(float(cold_vals.quantile(q)), rel=0.25)
    x = 3 * torch.randn(64, out_dim, generator=torch.Generator().manual_seed(1))   # inputs well beyond unit scale
    retired = block({**t, **upd})(x)
    dead = {**t, **upd, NAME: upd[NAME].masked_fill(hot[None, :], 0)}
    assert torch.allclose(retired, block(dead)(x), atol=1e-6)
    again, _ = resample(t, [NAME], seed=0, retire=True)
    assert all(torch.equal(again[k], upd[k]) for k in upd)
    with pytest.raises(RevivalError, match="choose one"):
        resample(t, [NAME], retire=True, fresh_units=True)


def test_resample_threshold_and_bad_arguments():
    t, mask, cols = _pruned(4)
    _, res = resample(t, [NAME], column_share=1.0)
    assert res.layers[0].hot_columns == 0                 # no unit entirely pruned: plain Gaussian fill
    out, proj, info, bias = resample_matrix(torch.ones(3, 4), None, torch.Generator())
    assert info.pruned == 0 and proj is None and torch.equal(out, torch.ones(3, 4))
    with pytest.raises(RevivalError, match="share"):
        resample(t, [NAME], column_share=0)
    with pytest.raises(RevivalError, match="not in the checkpoint"):
        resample(t, ["nope"])
    with pytest.raises(RevivalError, match="defense method"):
        get_defense("shred")
    assert DEFAULT_DEFENSE == "resample" and set(DEFENSES) == {"resample", "gaussian", "decoy"}


def test_decoy_zeros_exist_but_sit_elsewhere():
    t, mask, cols = _pruned(5)
    w = t[NAME]
    upd, res = decoy(t, [NAME], seed=0)
    out = upd[NAME]
    zeros = out == 0
    assert not bool((zeros & mask).any())                         # every pruned position filled
    assert int(zeros.sum()) == res.layers[0].decoys == int(mask.sum())  # as many decoys as pruned
    assert not bool(zeros[:, mask.any(0)].any())                  # decoys only in unpruned columns
    assert sorted(zeros.sum(0)[zeros.sum(0) > 0].tolist()) == sorted(mask.sum(0)[mask.sum(0) > 0].tolist())
    # in a decoy column the smallest weights were chosen
    j = int(zeros.any(0).nonzero()[0])
    k = int(zeros[:, j].sum())
    assert set(zeros[:, j].nonzero().flatten().tolist()) == set(w[:, j].abs().argsort()[:k].tolist())
    assert torch.equal(out[~zeros & ~mask], w[~zeros & ~mask])
    assert res.to_dict()["method"] == "decoy"
    d = decoy_positions(w, torch.ones_like(mask), torch.Generator())
    assert not bool(d.any())                                      # no free column: no decoy


@pytest.mark.parametrize("method", DEFENSES)
def test_every_defense_leaves_no_readable_pruned_position(method):
    t, mask, _ = _pruned(6)
    upd, res = apply_defense(t, [NAME], method, seed=0, scale=1.0)
    out = upd[NAME]
    assert not bool((out[mask] == 0).any()) and res.pruned == int(mask.sum())
    assert out.dtype == t[NAME].dtype


def test_defend_cli_methods(tiny_unet, tmp_path, capsys):
    from revival.cli import main
    from revival.io import load_checkpoint

    for method in ("resample", "decoy"):
        rc = main(["defend", str(tiny_unet.pruned_dir), "-o", str(tmp_path / method), "--method", method,
                   "--scale", "0.5", "--quiet"])
        assert rc == 0
        rep = json.loads((tmp_path / f"{method}.report.json").read_text())      # beside the output, not in it
        assert rep["defense"]["method"] == method and rep["defense"]["scale"] == 0.5
        assert rep["defense"]["seed"] is None                                    # secret randomness, not recorded
        assert sorted(p.name for p in (tmp_path / method).iterdir()) == sorted(
            p.name for p in tiny_unet.pruned_dir.iterdir())                      # the model's own files only
    ck = load_checkpoint(tmp_path / "resample")
    assert not any(bool((ck.tensors[n] == 0).any()) for n in ck.tensors if n.endswith("ff.net.2.weight"))
    rc = main(["defend", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "bad"), "--method", "shred"])
    assert rc == 2 and "defense method" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # another defense's option is refused in one sentence, nothing written (not silently ignored)
    for opts in (["--column-share", "0.3"], ["--no-retire"], ["--fresh-units"]):
        rc = main(["defend", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "gauss"), "--method", "gaussian", *opts])
        err = capsys.readouterr().err
        assert rc == 2 and f"takes no {opts[0].replace('no-', '')}" in err and "resample" in err, err
        assert "Traceback" not in err and not (tmp_path / "gauss").exists()


def test_defend_cli_retires_hot_units_of_a_diffusers_unet(tiny_unet, tmp_path):
    """`revival defend` on a diffusers folder: by default the hot units' ff.net.0.proj rows and
    biases are the only other tensors that change; --no-retire leaves every input layer alone."""
    from safetensors.torch import save_file

    from revival.cli import main
    from revival.io import load_checkpoint

    state = dict(tiny_unet.original)
    g = torch.Generator().manual_seed(0)
    hot_of = {}
    for name in tiny_unet.layers:                      # half the rows of 3 units pruned, per layer
        w = state[name].clone()
        cols = torch.randperm(w.shape[1], generator=g)[:3]
        rows = torch.rand(w.shape[0], 3, generator=g) < 0.5
        sub = w[:, cols]
        sub[rows] = 0
        w[:, cols] = sub
        state[name] = w
        hot_of[name] = cols
    release = tmp_path / "release.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(release))
    assert main(["defend", str(release), "-o", str(tmp_path / "safe.safetensors"), "--quiet"]) == 0
    assert main(["defend", str(release), "-o", str(tmp_path / "plain.safetensors"), "--no-retire", "--quiet"]) == 0
    safe = load_checkpoint(tmp_path / "safe.safetensors").tensors
    plain = load_checkpoint(tmp_path / "plain.safetensors").tensors
    rep = json.loads((tmp_path / "safe.safetensors.report.json").read_text())
    assert rep["defense"]["retire"] is True and rep["defense"]["totals"]["retired"] >= 3 * len(tiny_unet.layers)
    changed = {k for k in state if not torch.equal(safe[k], state[k])}
    proj = {n[: -len("ff.net.2.weight")] + "ff.net.0.proj." + p for n in tiny_unet.layers for p in ("weight", "bias")}
    assert changed == set(tiny_unet.layers) | proj
    assert {k for k in state if not torch.equal(plain[k], state[k])} == set(tiny_unet.layers)
    for name, cols in hot_of.items():
        b = safe[name[: -len("ff.net.2.weight")] + "ff.net.0.proj.bias"]
        hidden = state[name].shape[1]
        closed = b[hidden + cols]
        assert bool((closed < -9).all())                               # the hot units' gates are closed
        assert closed.unique().numel() == closed.numel()               # by drawn biases, no repeated constant


def test_resample_hot_units_at_their_own_scale():
    t, mask, cols = _pruned(7, out=256)
    w = t[NAME]
    upd, res = resample(t, [NAME], seed=0, hot="column")
    out = upd[NAME]
    for j in cols.tolist():
        surv = w[:, j][~mask[:, j]]
        rms = float(surv.pow(2).mean().sqrt())
        assert float(out[:, j].std()) == pytest.approx(rms, rel=0.35)
        assert abs(float(out[:, j].mean())) < 0.3 * rms
    assert res.to_dict()["hot"] == "column"
    with pytest.raises(RevivalError, match="hot-unit"):
        resample(t, [NAME], hot="diagonal")


def test_every_defense_option_is_a_defend_flag_and_an_unknown_one_is_refused():
    """The options come from the registered defenses' signatures: each has its `defend` flag (so a
    new defense's option cannot be left unreachable), and an option no defense takes is refused."""
    from revival.cli import build_parser
    from revival.defense import defense_options
    from revival.errors import RevivalError

    opts = defense_options()
    assert {"column_share", "fresh_units", "hot", "retire"} <= set(opts)
    args = build_parser().parse_args(["defend", "x.safetensors", "-o", "y.safetensors"])
    for name, default in opts.items():
        assert getattr(args, name) == default, name       # the flag exists, and its default is the defense's
    t, _, _ = _pruned(6)
    with pytest.raises(RevivalError, match="no defense takes an option 'shred'"):
        apply_defense(t, [NAME], "gaussian", seed=0, shred=1)
    with pytest.raises(RevivalError, match="gaussian defense takes no --hot"):
        apply_defense(t, [NAME], "gaussian", seed=0, hot="row")
    upd, _ = apply_defense(t, [NAME], "gaussian", seed=0, hot=None)   # resample's default value: not "given"
    assert NAME in upd
