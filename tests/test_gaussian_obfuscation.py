import json
import pytest
import torch
from conftest import file_bytes

from revival.io import load_checkpoint
from revival.release.layers import select_layers
from revival.defense.obfuscate import defend, obfuscate, obfuscate_matrix, strip_pruning_metadata
from revival.errors import RevivalError


def _bits(t):
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fills_every_pruned_position_and_nothing_else(dtype):
    g = torch.Generator().manual_seed(0)
    w = (0.02 * torch.randn(64, 256, generator=g)).to(dtype)
    w[torch.rand(64, 256, generator=g) < 0.1] = 0
    w[3] = 0  # a fully pruned row: falls back to the layer statistics
    mask = w == 0
    upd, res = obfuscate({"L": w}, ["L"], stats="row", seed=0)
    out = upd["L"]
    assert out.dtype == dtype and out.shape == w.shape
    assert not bool((out[mask] == 0).any())
    assert torch.equal(_bits(out)[~mask], _bits(w)[~mask])
    info = res.layers[0]
    assert info.pruned == int(mask.sum()) and info.rows_fallback == 1
    assert res.to_dict()["totals"]["filled"] == int(mask.sum())


def test_row_statistics_follow_each_row_and_layer_statistics_do_not():
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([-1.0, 0.0, 2.0, 5.0]).unsqueeze(1)
    stds = torch.tensor([0.1, 1.0, 0.5, 2.0]).unsqueeze(1)
    w = means + stds * torch.randn(4, 20000, generator=g)
    w[:, ::2] = 0  # half of each row pruned
    mask = w == 0
    out, _ = obfuscate_matrix(w, "row", torch.Generator().manual_seed(0))
    for r in range(4):
        noise = out[r][mask[r]]
        assert noise.mean().item() == pytest.approx(means[r].item(), abs=0.05 * stds[r].item() + 0.02)
        assert noise.std().item() == pytest.approx(stds[r].item(), rel=0.05)
    out_l, _ = obfuscate_matrix(w, "layer", torch.Generator().manual_seed(0))
    surv = w[~mask]
    noise = out_l[mask]
    assert noise.mean().item() == pytest.approx(surv.mean().item(), abs=0.05)
    assert noise.std().item() == pytest.approx(surv.std().item(), rel=0.05)
    # per row, layer noise ignores the row: row 0 (mean -1) gets noise centred on the layer mean
    assert abs(out_l[0][mask[0]].mean().item() - surv.mean().item()) < 0.1


def test_draws_that_round_to_zero_are_redrawn_or_nudged():
    w = torch.zeros(2, 400, dtype=torch.float16)
    w[:, :3] = torch.tensor([6e-8, -6e-8, 1.2e-7]).half()  # survivors so tiny that fp16 rounds draws to 0
    out, info = obfuscate_matrix(w, "row", torch.Generator().manual_seed(0))
    assert info.nudged > 0
    assert not bool((out[w == 0] == 0).any())


def test_same_seed_same_values_and_independent_of_other_layers():
    g = torch.Generator().manual_seed(2)
    t = {n: torch.randn(16, 32, generator=g).masked_fill(torch.rand(16, 32, generator=g) < 0.2, 0) for n in "abc"}
    u1, _ = obfuscate(t, ["a", "b", "c"], seed=7)
    u2, _ = obfuscate(t, ["c", "b"], seed=7)
    u3, _ = obfuscate(t, ["b"], seed=8)
    assert torch.equal(u1["b"], u2["b"]) and torch.equal(u1["c"], u2["c"])
    assert not torch.equal(u1["b"], u3["b"])


def test_bad_arguments_raise():
    t = {"a": torch.ones(2, 2), "n": torch.tensor([[float("nan"), 0.0]])}
    with pytest.raises(RevivalError, match="stats"):
        obfuscate(t, ["a"], stats="column")
    with pytest.raises(RevivalError, match="seed"):
        obfuscate(t, ["a"], seed=-1)
    with pytest.raises(RevivalError, match="NaN"):
        obfuscate(t, ["n"])
    with pytest.raises(RevivalError, match="not in the checkpoint"):
        obfuscate(t, ["zzz"])


def test_strip_pruning_metadata():
    meta = {"format": "pt", "conceptprune.concept": "sneaker", "note": "unlearned by pruning", "MASK": "x",
            "author": "me"}
    kept, removed = strip_pruning_metadata(meta)
    assert kept == {"format": "pt", "author": "me"}
    assert sorted(removed) == ["MASK", "conceptprune.concept", "note"]


@pytest.mark.parametrize("kind", ["safetensors_fp16", "folder", "torch_ckpt_ldm"])
def test_defend_checkpoint_end_to_end(checkpoint_files, tmp_path, kind):
    src = checkpoint_files[kind]
    before = file_bytes(src)
    suffix = "" if src.is_dir() else src.suffix
    reports = tmp_path / "reports"
    reports.mkdir()
    out1, res, masks = defend(src, tmp_path / ("a" + suffix), stats="row", seed=3, method="gaussian",
                              report=reports / "a.json")
    out2, _, _ = defend(src, tmp_path / ("b" + suffix), stats="row", seed=3, method="gaussian",
                        report=reports / "b.json")
    out3, _, _ = defend(src, tmp_path / ("c" + suffix), stats="row", seed=4, method="gaussian",
                        report=reports / "c.json")
    assert res.report == reports / "a.json" and json.loads(res.report.read_text())["defense"]["seed"] == 3
    assert file_bytes(src) == before
    assert file_bytes(out1) == file_bytes(out2)
    assert file_bytes(out1) != file_bytes(out3)
    assert masks.pruned == res.pruned > 0
    ck_in, ck_out = load_checkpoint(src), load_checkpoint(out1)
    layers = select_layers(ck_in.tensors)
    for name in ck_in.tensors:
        a, b = ck_in.tensors[name], ck_out.tensors[name]
        assert a.dtype == b.dtype
        if name in layers:
            m = a == 0
            assert not bool((b[m] == 0).any())
            assert torch.equal(a[~m], b[~m])
        else:
            assert torch.equal(a, b)
    if kind == "safetensors_fp16":
        assert ck_out.metadata == {"format": "pt", "note": "tiny"}  # nothing telltale there: kept


def test_defend_strips_telltale_metadata_and_refuses_unpruned(checkpoint_files, tmp_path):
    from safetensors.torch import save_file

    ck = load_checkpoint(checkpoint_files["safetensors_fp32"])
    tensors = {k: ck.tensors[k] for k in ck.tensors}
    save_file(tensors, str(tmp_path / "p.safetensors"), metadata={"format": "pt", "pruned_by": "conceptprune"})
    out, res, _ = defend(tmp_path / "p.safetensors", tmp_path / "d.safetensors")      # the default method
    assert res.to_dict()["method"] == "resample"
    assert res.metadata_removed == ["pruned_by"]
    assert load_checkpoint(out).metadata == {"format": "pt"}
    with pytest.raises(RevivalError, match="no pruned layer was found"):  # no zeros left to find
        defend(out, tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()


def test_noise_scale_knob():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(8, 4000, generator=g)
    w[:, ::2] = 0
    mask = w == 0
    base, _ = obfuscate_matrix(w, "row", torch.Generator().manual_seed(0))
    wide, _ = obfuscate_matrix(w, "row", torch.Generator().manual_seed(0), scale=3.0)
    assert wide[mask].std().item() == pytest.approx(3 * base[mask].std().item(), rel=0.05)
    assert torch.equal(wide[~mask], w[~mask])
    upd, res = obfuscate({"L": w}, ["L"], seed=0, scale=0.5)
    assert res.to_dict()["scale"] == 0.5
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(RevivalError, match="noise scale"):
            obfuscate_matrix(w, "row", scale=bad)
