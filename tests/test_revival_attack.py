"""The whole attack: revive() over a state dict, AttackConfig validation, results."""
import json

import pytest
import torch

from revival.attack import MAGNITUDES, SOLVERS, AttackConfig, revive
from revival.attack.revive import side_features
from revival.errors import RevivalError

FF2 = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"
PROJ = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"



def make_state(dtype=torch.float16, seed=0, out=24, hidden=48, frac=0.05):
    """A tiny block: ff.net.2 [out, hidden] (pruned) and its GEGLU ff.net.0.proj [2*hidden, out]."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(2 * hidden, out, generator=g) * 0.1
    w = -0.5 * proj[:hidden].T + 0.01 * torch.randn(out, 3, generator=g) @ torch.randn(3, hidden, generator=g)
    missing = torch.rand(out, hidden, generator=g) < frac
    return {FF2: w.masked_fill(missing, 0).to(dtype), PROJ: proj.to(dtype),
            "other.weight": torch.randn(5, 5, generator=g).to(dtype)}, w, missing


def test_unpruned_entries_bit_identical_and_dtype_kept():
    state, _, missing = make_state(torch.float16)
    before = {k: v.clone() for k, v in state.items()}
    updates, result = revive(state, [FF2], AttackConfig(), progress=False)
    assert list(updates) == [FF2]
    out = updates[FF2]
    assert out.dtype == torch.float16 and out.shape == state[FF2].shape
    assert torch.equal(out[~missing].view(torch.int16), state[FF2][~missing].view(torch.int16))
    changed = out != 0
    assert int((changed & missing).sum()) == round(0.6 * int(missing.sum()))
    for k in state:                                     # the input dict is not modified
        assert torch.equal(state[k], before[k])
    layer = result.layers[0]
    assert layer.pruned == int(missing.sum()) and layer.kept == int((changed & missing).sum())
    assert layer.side is True                            # found the GEGLU projection by name


def test_side_information_recovers_signs():
    state, w, missing = make_state(torch.float32, frac=0.08)
    def agree(cfg):
        updates, result = revive(state, [FF2], cfg, progress=False)
        assert result.layers[0].side is cfg.side
        return (torch.sign(updates[FF2][missing]) == torch.sign(w[missing])).float().mean()

    assert agree(AttackConfig(keep=1.0)) > 0.9
    assert agree(AttackConfig(keep=1.0, side=False)) < 0.75


def test_same_seed_same_tensors_different_seed_differs():
    state, _, _ = make_state(torch.float32)
    a, _ = revive(state, [FF2], AttackConfig(seed=3, magnitude="sample"), progress=False)
    b, _ = revive(state, [FF2], AttackConfig(seed=3, magnitude="sample"), progress=False)
    c, _ = revive(state, [FF2], AttackConfig(seed=4, magnitude="sample"), progress=False)
    assert torch.equal(a[FF2], b[FF2]) and not torch.equal(a[FF2], c[FF2])


def test_layers_without_pruning_are_skipped_and_none_pruned_raises():
    state, _, _ = make_state(torch.float32)
    state["intact.ff.net.2.weight"] = torch.ones(4, 6)
    updates, result = revive(state, [FF2, "intact.ff.net.2.weight"], AttackConfig(), progress=False)
    assert list(updates) == [FF2]
    d = result.to_dict()
    assert d["skipped"] == ["intact.ff.net.2.weight"]
    assert d["totals"]["layers"] == 1 and d["totals"]["pruned"] == result.layers[0].pruned
    json.dumps(d)
    with pytest.raises(RevivalError, match="no target layer has any pruned"):
        revive({"a": torch.ones(3, 3)}, ["a"], AttackConfig(), progress=False)


@pytest.mark.parametrize("bad, value", [
    ({"missing": "x"}, "'x' is not in the checkpoint"),
    ({"nan": True}, "NaN or infinite"),
    ({"vector": True}, "not a matrix of floating-point weights"),
])
def test_bad_layers(bad, value):
    state, _, _ = make_state(torch.float32)
    name = FF2
    if "missing" in bad:
        name = "x"
    if "nan" in bad:
        state[FF2] = state[FF2].clone()
        state[FF2][0, 0] = float("nan")
    if "vector" in bad:
        state[FF2] = torch.zeros(5)
    with pytest.raises(RevivalError, match=value):
        revive(state, [name], AttackConfig(), progress=False)


@pytest.mark.parametrize("param, value", [
    ("solver", "magic"), ("rank", -1), ("rank", 2.5), ("lam", -1.0), ("keep", 0.0),
    ("keep", 1.2), ("magnitude", "huge"), ("seed", -1), ("max_iters", 0), ("tol", 0.0),
    ("device", "gpu0"), ("side", "yes"),
])
def test_bad_config_names_parameter(param, value):
    with pytest.raises(RevivalError, match=rf"^{param} "):
        AttackConfig(**{param: value})


def test_side_features_shapes():
    state, _, _ = make_state(torch.float32)
    f = side_features(state, FF2, tuple(state[FF2].shape))
    assert f.shape == (2, 24, 48) and f.data_ptr() == state[PROJ].data_ptr()  # a view, no copy
    assert torch.equal(f[0], state[PROJ][:48].T) and torch.equal(f[1], state[PROJ][48:].T)
    plain = side_features({}, "x", (24, 48), side={"x": torch.ones(48, 24)})
    assert plain.shape == (1, 24, 48)
    assert side_features(state, "nope.weight", (24, 48)) is None
    assert side_features({}, "x", (24, 48), side={"x": torch.ones(7, 24)}) is None


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("magnitude", sorted(MAGNITUDES))
def test_every_solver_and_magnitude_runs(solver, magnitude):
    state, _, missing = make_state(torch.float32, out=12, hidden=20, frac=0.1)
    cfg = AttackConfig(solver=solver, magnitude=magnitude, rank=2, max_iters=3)
    updates, result = revive(state, [FF2], cfg, progress=False)
    out = updates[FF2]
    assert torch.equal(out[~missing], state[FF2][~missing])
    kept = missing & (out != 0)
    assert int(kept.sum()) == result.layers[0].kept == round(0.6 * int(missing.sum()))
    assert torch.isfinite(out).all()


def test_tiny_unet_end_to_end(tiny_unet):
    updates, result = revive(tiny_unet.pruned, tiny_unet.layers, AttackConfig(), progress=False)
    assert set(updates) == set(tiny_unet.layers)
    for name in tiny_unet.layers:
        pruned = tiny_unet.pruned[name]
        assert torch.equal(updates[name][pruned != 0], pruned[pruned != 0])
    # every block's GEGLU projection was found and validated (kept only where it helps)
    for layer in result.layers:
        v = layer.validation
        assert v is not None and v["held_out"] > 0
        assert layer.side == (v["side"] > v["no_side"])


def test_fully_pruned_row_and_column_stay_finite_and_nonzero():
    state, _, missing = make_state(torch.float32)
    w = state[FF2].clone()
    w[3, :] = 0
    w[:, 5] = 0
    state[FF2] = w
    updates, result = revive(state, [FF2], AttackConfig(keep=1.0), progress=False)
    out = updates[FF2]
    assert torch.isfinite(out).all()
    assert (out[w == 0] != 0).all()       # neuron-max: every kept position gets a real magnitude
