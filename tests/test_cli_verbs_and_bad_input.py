import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import file_bytes

from revival.io import load_checkpoint
from revival.release.layers import select_layers
from revival.cli import main


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_inspect_table_and_json(checkpoint_files, capsys):
    rc, out, err = run(capsys, "inspect", checkpoint_files["ldm_safetensors"])
    assert rc == 0 and "safetensors (ldm naming)" in out and "float16" in out
    assert "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight" in out and "total" in out
    rc, out, _ = run(capsys, "inspect", checkpoint_files["folder"], "--json")
    info = json.loads(out)
    assert info["format"] == "diffusers" and len(info["layers"]) == 6
    assert info["pruned"]["totals"]["pruned"] > 0
    assert {"columns_touched", "top1pct_column_share", "max_per_row"} <= set(info["pruned"]["layers"][0])
    assert info["exposed"] is True and info["verdict"].startswith("exposed:")


def test_inspect_verdict_dense_and_obfuscated(tiny_unet, tmp_path, capsys):
    rc, out, _ = run(capsys, "inspect", tiny_unet.original_dir)
    assert rc == 0 and "verdict     no exact zeros" in out
    rc, _, err = run(capsys, "defend", tiny_unet.pruned_dir, "-o", tmp_path / "defended", "--quiet")
    assert rc == 0, err
    rc, out, _ = run(capsys, "inspect", tmp_path / "defended", "--json")
    assert json.loads(out)["exposed"] is False
    from safetensors.torch import save_file   # one stray zero is not a pruning mask

    sd = dict(tiny_unet.original)
    w = sd[tiny_unet.layers[0]].clone()
    w[0, 0] = 0
    sd[tiny_unet.layers[0]] = w
    save_file(sd, str(tmp_path / "stray.safetensors"))
    rc, out, _ = run(capsys, "inspect", tmp_path / "stray.safetensors")
    assert rc == 0 and "too few to be a pruning mask" in out


@pytest.mark.parametrize("kind", ["folder", "safetensors_bf16", "torch_ckpt_ldm"])
def test_attack_writes_input_format_and_report(checkpoint_files, tmp_path, capsys, kind):
    src = checkpoint_files[kind]
    before = file_bytes(src)
    suffix = "" if src.is_dir() else src.suffix
    out = tmp_path / ("rev" + suffix)
    rc, stdout, err = run(capsys, "attack", src, "-o", out, "--quiet", "--seed", "1")
    assert rc == 0, err
    assert file_bytes(src) == before
    report = tmp_path / ("rev" + suffix + ".report.json")  # beside the output, a folder too
    data = json.loads(report.read_text())
    assert not (out / "revival_report.json").exists()
    assert data["mask"]["totals"]["pruned"] > 0 and data["attack"]["totals"]["kept"] > 0
    ck_in, ck_out = load_checkpoint(src), load_checkpoint(out)
    assert (ck_out.format, ck_out.naming) == (ck_in.format, ck_in.naming)
    layers = select_layers(ck_in.tensors)
    changed = 0
    for name in ck_in.tensors:
        a, b = ck_in.tensors[name], ck_out.tensors[name]
        assert a.dtype == b.dtype
        if name in layers:
            m = a == 0
            assert torch.equal(a[~m], b[~m])  # unpruned entries bit-identical
            changed += int((b[m] != 0).sum())
        else:
            assert torch.equal(a, b)
    assert changed == data["attack"]["totals"]["kept"]


def test_attack_skips_unpruned_layers_and_leaves_them_alone(checkpoint_files, tmp_path, capsys):
    src = checkpoint_files["safetensors_fp32"]
    rc, _, err = run(capsys, "attack", src, "-o", tmp_path / "r.safetensors", "--quiet",
                     "--layers", r"ff\.net\.2\.weight$|mid_block.*attn2\.to_q\.weight$")
    assert rc == 0, err
    data = json.loads((tmp_path / "r.safetensors.report.json").read_text())
    q = "mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight"
    assert data["attack"]["skipped"] == [q]
    assert [l["name"] for l in data["mask"]["layers"]] == [l["name"] for l in data["attack"]["layers"]]
    a, b = load_checkpoint(src), load_checkpoint(tmp_path / "r.safetensors")
    assert torch.equal(a.tensors[q], b.tensors[q])


def test_attack_same_seed_same_bytes(checkpoint_files, tmp_path, capsys):
    src = checkpoint_files["safetensors_fp16"]
    for name in ("a", "b"):
        rc, _, err = run(capsys, "attack", src, "-o", tmp_path / f"{name}.safetensors", "--quiet", "--seed", "5",
                         "--magnitude", "sample")
        assert rc == 0, err
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_defend_and_score_verbs(tiny_unet, tmp_path, capsys):
    rc, out, err = run(capsys, "defend", tiny_unet.pruned_dir, "-o", tmp_path / "safe", "--stats", "layer",
                       "--seed", "2")
    assert rc == 0, err and "filled" in out
    rep = json.loads((tmp_path / "safe.report.json").read_text())  # beside the folder, never inside
    assert sorted(p.name for p in (tmp_path / "safe").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert rep["defense"]["stats"] == "layer" and rep["defense"]["totals"]["filled"] > 0
    rc, _, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", tmp_path / "rev", "--quiet")
    assert rc == 0, err
    args = ["score", "--original", tiny_unet.original_dir, "--pruned", tiny_unet.pruned_dir,
            "--revived", tmp_path / "rev"]
    rc, out, _ = run(capsys, *args)
    assert rc == 0 and "sign@all" in out and "overall" in out
    rc, out, _ = run(capsys, *args, "--json", "--report", tmp_path / "score.json")
    data = json.loads(out)
    assert data == json.loads((tmp_path / "score.json").read_text())
    o = data["overall"]
    assert o["unpruned_changed"] == 0 and o["pruned_vs_original"] == 0 and o["layers"] == 6
    assert 0.0 <= o["sign_acc_all"] <= o["kept_fraction"] <= 1.0


# --------------------------------------------------------------------------- bad input

@pytest.fixture
def bad_inputs(checkpoint_files, tiny_unet, tmp_path):
    from safetensors.torch import save_file

    st = checkpoint_files["safetensors_fp32"]
    d = tmp_path / "in"
    d.mkdir()
    (d / "trunc.safetensors").write_bytes(st.read_bytes()[: st.stat().st_size * 2 // 3])
    (d / "junk.safetensors").write_bytes(b"<html>not a model</html>\n" * 20)
    ck = load_checkpoint(st)
    tensors = {k: ck.tensors[k].clone() for k in ck.tensors}
    layer = select_layers(ck.tensors)[1]
    tensors[layer][0, 0] = float("nan")
    save_file(tensors, str(d / "nan.safetensors"))
    small = {k: v for k, v in tiny_unet.original.items()}
    small[layer] = small[layer][:, :-1].contiguous()
    save_file(small, str(d / "shape.safetensors"))
    shutil.copyfile(st, d / "pruned.safetensors")
    save_file(dict(tiny_unet.original), str(d / "original.safetensors"))
    return d


BAD = {
    "missing file": (["attack", "{d}/nope.safetensors", "-o", "{o}/x.safetensors"], "does not exist"),
    "truncated file": (["attack", "{d}/trunc.safetensors", "-o", "{o}/x.safetensors"], "truncated"),
    "junk file": (["defend", "{d}/junk.safetensors", "-o", "{o}/x.safetensors"], "neither a safetensors"),
    "junk inspect": (["inspect", "{d}/junk.safetensors"], "neither a safetensors"),
    "no target layers": (["attack", "{d}/pruned.safetensors", "-o", "{o}/x.safetensors", "--layers", "nothing"],
                         "matches the layer pattern"),
    "nothing pruned": (["attack", "{d}/original.safetensors", "-o", "{o}/x.safetensors"], "no pruned"),
    "nothing pruned defend": (["defend", "{d}/original.safetensors", "-o", "{o}/x.safetensors"], "no pruned"),
    "nan in target": (["attack", "{d}/nan.safetensors", "-o", "{o}/x.safetensors"], "NaN/inf"),
    "nan defend": (["defend", "{d}/nan.safetensors", "-o", "{o}/x.safetensors"], "NaN/inf"),
    "score shape mismatch": (["score", "--original", "{d}/shape.safetensors", "--pruned", "{d}/pruned.safetensors",
                              "--revived", "{d}/pruned.safetensors"], "shape"),
    "attack output is input": (["attack", "{d}/pruned.safetensors", "-o", "{d}/pruned.safetensors"], "is an input"),
    "defend output is input": (["defend", "{d}/pruned.safetensors", "-o", "{d}/./pruned.safetensors"], "is an input"),
    "report is input": (["attack", "{d}/pruned.safetensors", "-o", "{o}/x.safetensors", "--report",
                         "{d}/pruned.safetensors"], "is an input"),
    "report folder is a file": (["attack", "{d}/pruned.safetensors", "-o", "{o}/x.safetensors", "--report",
                                 "{d}/pruned.safetensors/r.json"], "is a file, not a folder"),
    "output inside the input": (["attack", "{d}", "-o", "{d}/revived.safetensors"], "inside the input"),
    "score report is input": (["score", "--original", "{d}/original.safetensors", "--pruned", "{d}/pruned.safetensors",
                               "--revived", "{d}/pruned.safetensors", "--report", "{d}/original.safetensors"],
                              "is an input"),
    "bad attack option": (["attack", "{d}/pruned.safetensors", "-o", "{o}/x.safetensors", "--keep", "1.5"], "keep"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_sentence_exit_2_no_output(bad_inputs, tmp_path, capsys, case):
    argv, needle = BAD[case]
    (tmp_path / "out").mkdir()
    argv = [a.format(d=bad_inputs, o=tmp_path / "out") for a in argv]
    before = file_bytes(bad_inputs)
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.startswith("revival: error: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temp files
    assert file_bytes(bad_inputs) == before  # inputs untouched


def test_bad_input_in_a_real_process_has_no_traceback(bad_inputs, tmp_path):
    for argv in (["attack", str(bad_inputs / "trunc.safetensors"), "-o", str(tmp_path / "x.safetensors")],):
        proc = subprocess.run([sys.executable, "-m", "revival.cli", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.startswith("revival: error: ") and "Traceback" not in proc.stderr
        assert not (tmp_path / "x.safetensors").exists()


def test_a_release_is_checked_against_the_model_by_one_rule():
    """`revival.release.belongs.check_belongs`, which audit, relearn and the relearning attacker share:
    a release of some of the model's tensors belongs; no shared name, another shape, or (outside a
    single-file pipeline) a name the model lacks is one sentence."""
    from revival.errors import RevivalError
    from revival.release.belongs import check_belongs

    model = {"a.weight": torch.zeros(4, 8), "b.weight": torch.zeros(8, 4)}
    assert check_belongs(model, {"b.weight": torch.ones(8, 4)}) == (["b.weight"], [])
    assert check_belongs(model, {"b.weight": torch.ones(8, 4), "vae.x": torch.ones(1)}, others_allowed=True) == (
        ["b.weight"], ["vae.x"])
    for release, says in (({"c.weight": torch.ones(4, 8)}, "another architecture"),
                          ({"a.weight": torch.ones(8, 4)}, "has shape (8, 4), the model's (4, 8)"),
                          ({"a.weight": torch.ones(4, 8), "vae.x": torch.ones(1)}, "'vae.x' the model's UNet does not have"),
                          ({}, "holds no tensors")):
        with pytest.raises(RevivalError, match=re.escape(says)):
            check_belongs(model, release)
