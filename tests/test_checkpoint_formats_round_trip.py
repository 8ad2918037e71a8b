import json
import pickle
import shutil

import pytest
import torch
from conftest import FF2, file_bytes

from revival.io import TensorStore, check_output_path, diffusers_to_ldm, ldm_to_diffusers, load_checkpoint, save_checkpoint, write_report
from revival.release.layers import DEFAULT_LAYERS, check_finite, select_layers
from revival.errors import RevivalError

BYTE_EXACT = ["folder", "folder_fp16", "folder_bf16", "folder_sharded", "safetensors_fp16",
              "safetensors_bf16", "safetensors_fp32", "ldm_safetensors"]
ALL = BYTE_EXACT + ["folder_bin", "torch_pt", "torch_ckpt_ldm", "torch_bf16"]
EXPECT = {  # format, naming, dtype of the target layers
    "folder": ("diffusers", "diffusers", torch.float32), "folder_fp16": ("diffusers", "diffusers", torch.float16),
    "folder_bf16": ("diffusers", "diffusers", torch.bfloat16), "folder_sharded": ("diffusers", "diffusers", torch.float32),
    "folder_bin": ("diffusers", "diffusers", torch.float32),
    "safetensors_fp16": ("safetensors", "diffusers", torch.float16),
    "safetensors_bf16": ("safetensors", "diffusers", torch.bfloat16),
    "safetensors_fp32": ("safetensors", "diffusers", torch.float32),
    "ldm_safetensors": ("safetensors", "ldm", torch.float16), "torch_pt": ("torch", "diffusers", torch.float32),
    "torch_ckpt_ldm": ("torch", "ldm", torch.float32), "torch_bf16": ("torch", "diffusers", torch.bfloat16),
}


def test_ldm_name_mapping_follows_sd_layout():
    p = "model.diffusion_model."
    rest = "transformer_blocks.0.ff.net.2.weight"
    cases = {f"{p}input_blocks.1.1.{rest}": f"down_blocks.0.attentions.0.{rest}",
             f"{p}input_blocks.2.1.{rest}": f"down_blocks.0.attentions.1.{rest}",
             f"{p}input_blocks.4.1.{rest}": f"down_blocks.1.attentions.0.{rest}",
             f"{p}input_blocks.8.1.proj_in.weight": "down_blocks.2.attentions.1.proj_in.weight",
             f"{p}middle_block.1.{rest}": f"mid_block.attentions.0.{rest}",
             f"{p}output_blocks.3.1.{rest}": f"up_blocks.1.attentions.0.{rest}",
             f"{p}output_blocks.11.1.norm.bias": "up_blocks.3.attentions.2.norm.bias"}
    for ldm, diff in cases.items():
        assert ldm_to_diffusers(ldm) == diff
        assert diffusers_to_ldm(diff) == ldm
    # downsamplers, upsamplers, resnets and non-UNet keys are not attention blocks
    for key in [f"{p}input_blocks.3.0.op.weight", f"{p}output_blocks.2.1.conv.weight",
                f"{p}input_blocks.1.0.in_layers.0.weight", "first_stage_model.decoder.conv_in.weight",
                f"{p}middle_block.0.emb_layers.1.weight"]:
        assert ldm_to_diffusers(key) is None


@pytest.mark.parametrize("kind", ALL)
def test_load_reports_format_naming_dtype_and_targets(checkpoint_files, tiny_unet, kind):
    ckpt = load_checkpoint(checkpoint_files[kind])
    fmt, naming, dtype = EXPECT[kind]
    assert (ckpt.format, ckpt.naming) == (fmt, naming)
    layers = select_layers(ckpt.tensors)
    assert layers and set(layers) == set(tiny_unet.layers)
    for name in layers:
        w = ckpt.tensors[name]
        assert w.dtype == dtype
        assert torch.equal(w.float(), tiny_unet.pruned[name].to(dtype).float())


@pytest.mark.parametrize("kind", ALL)
def test_roundtrip_without_updates_keeps_everything(checkpoint_files, tmp_path, kind):
    src = checkpoint_files[kind]
    before = file_bytes(src)
    ckpt = load_checkpoint(src)
    out = save_checkpoint(ckpt, tmp_path / ("out" + ("" if src.is_dir() else src.suffix)))
    assert file_bytes(src) == before  # input untouched
    if kind in BYTE_EXACT:
        assert file_bytes(out) == before
    back = load_checkpoint(out)
    assert (back.format, back.naming, back.metadata) == (ckpt.format, ckpt.naming, ckpt.metadata)
    assert list(back.tensors) == list(ckpt.tensors)
    for name in ckpt.tensors:
        a, b = ckpt.tensors[name], back.tensors[name]
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("kind", ALL)
def test_update_changes_only_the_target(checkpoint_files, tmp_path, kind):
    src = checkpoint_files[kind]
    ckpt = load_checkpoint(src)
    name = select_layers(ckpt.tensors)[0]
    w = ckpt.tensors[name]
    new = w.clone()
    new[w == 0] = 0.5
    out = save_checkpoint(ckpt, tmp_path / ("out" + ("" if src.is_dir() else src.suffix)), {name: new})
    back = load_checkpoint(out)
    for other in ckpt.tensors:
        expect = new if other == name else ckpt.tensors[other]
        assert back.tensors[other].dtype == expect.dtype and torch.equal(back.tensors[other], expect), other


def test_ldm_file_keeps_its_own_names_and_extra_tensors(checkpoint_files, tmp_path):
    from safetensors import safe_open

    src = checkpoint_files["ldm_safetensors"]
    ckpt = load_checkpoint(src)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"
    assert ckpt.tensors.file_key(name) == "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.weight"
    assert "first_stage_model.decoder.conv_in.weight" in ckpt.tensors
    upd = torch.full_like(ckpt.tensors[name], 0.25)
    out = save_checkpoint(ckpt, tmp_path / "o.safetensors", {name: upd})
    with safe_open(str(out), "pt") as f, safe_open(str(src), "pt") as g:
        assert set(f.keys()) == set(g.keys())
        for k in g.keys():
            same = torch.equal(f.get_tensor(k), g.get_tensor(k))
            assert same == (k != ckpt.tensors.file_key(name)), k
    # --layers can also match the file's own (LDM) names
    assert select_layers(ckpt.tensors, r"input_blocks\.1\.1\..*ff\.net\.2\.weight") == [name]


def test_torch_wrapper_keeps_non_tensor_entries(checkpoint_files, tmp_path):
    ckpt = load_checkpoint(checkpoint_files["torch_ckpt_ldm"])
    out = save_checkpoint(ckpt, tmp_path / "o.ckpt")
    obj = torch.load(out, weights_only=True)
    assert obj["global_step"] == 1234 and obj["epoch"] == 5
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.weight" in obj["state_dict"]
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in obj["state_dict"]


def test_written_folder_loads_in_diffusers(tiny_unet, tmp_path):
    from diffusers import UNet2DConditionModel

    ckpt = load_checkpoint(tiny_unet.pruned_dir)
    name = tiny_unet.layers[-1]
    upd = ckpt.tensors[name] + 1.0
    save_checkpoint(ckpt, tmp_path / "unet", {name: upd})
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert torch.equal(unet.state_dict()[name], upd)


def test_sharded_update_rewrites_only_its_shard(checkpoint_files, tmp_path):
    src = checkpoint_files["folder_sharded"]
    ckpt = load_checkpoint(src)
    name = select_layers(ckpt.tensors)[2]
    index = json.loads((src / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shard = index["weight_map"][name]
    out = save_checkpoint(ckpt, tmp_path / "o", {name: torch.ones_like(ckpt.tensors[name])})
    before, after = file_bytes(src), file_bytes(out)
    assert sorted(before) == sorted(after)
    assert [k for k in before if before[k] != after[k]] == [shard]


def test_pipeline_folder_reads_its_unet(tiny_unet, tmp_path):
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    shutil.copytree(tiny_unet.pruned_dir, tmp_path / "pipe" / "unet")
    ckpt = load_checkpoint(tmp_path / "pipe")
    assert ckpt.path == tmp_path / "pipe" / "unet" and ckpt.format == "diffusers"


def test_reads_are_lazy(checkpoint_files):
    ckpt = load_checkpoint(checkpoint_files["safetensors_fp16"])
    assert isinstance(ckpt.tensors, TensorStore) and ckpt.tensors.loaded() == {}
    layers = select_layers(ckpt.tensors)
    assert ckpt.tensors.loaded() == {}
    ckpt.tensors[layers[0]]
    assert list(ckpt.tensors.loaded()) == [layers[0]]
    with pytest.raises(TypeError):
        del ckpt.tensors[layers[0]]


def test_metadata_can_be_replaced(checkpoint_files, tmp_path):
    ckpt = load_checkpoint(checkpoint_files["safetensors_fp32"])
    out = save_checkpoint(ckpt, tmp_path / "a.safetensors", metadata={"format": "pt"})
    assert load_checkpoint(out).metadata == {"format": "pt"}
    out = save_checkpoint(ckpt, tmp_path / "b.safetensors", metadata={})
    assert load_checkpoint(out).metadata == {}
    sh = load_checkpoint(checkpoint_files["folder_sharded"])
    out = save_checkpoint(sh, tmp_path / "c", metadata={"x": "y"})
    assert all(f.header.get("__metadata__") == {"x": "y"} for f in load_checkpoint(out).source.files)


def test_select_layers_patterns(checkpoint_files):
    ckpt = load_checkpoint(checkpoint_files["folder"])
    assert select_layers(ckpt.tensors, DEFAULT_LAYERS) == select_layers(ckpt.tensors)
    assert all(n.endswith(FF2) for n in select_layers(ckpt.tensors))
    q = select_layers(ckpt.tensors, r"attn2\.to_q\.weight$")
    assert q and all(n.endswith("attn2.to_q.weight") for n in q)
    assert select_layers(ckpt.tensors, r"mid_block.*ff\.net\.2") == ["mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"]
    with pytest.raises(RevivalError, match="no 2-D floating-point weight matches"):
        select_layers(ckpt.tensors, r"nothing_like_this")
    with pytest.raises(RevivalError, match="not a valid regular expression"):
        select_layers(ckpt.tensors, r"ff.net.(2")
    with pytest.raises(RevivalError):  # only 1-D biases match
        select_layers(ckpt.tensors, r"ff\.net\.2\.bias$")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bad_files_raise_one_sentence(checkpoint_files, tmp_path):
    st = checkpoint_files["safetensors_fp32"].read_bytes()
    pt = checkpoint_files["torch_pt"].read_bytes()
    cases = {
        tmp_path / "missing.safetensors": "does not exist",
        _write(tmp_path / "empty.safetensors", b""): "is empty",
        _write(tmp_path / "junk.safetensors", b"hello, this is not a model at all\n" * 10): "neither a safetensors",
        _write(tmp_path / "cut.safetensors", st[: len(st) // 2]): "truncated",
        _write(tmp_path / "cuthead.safetensors", st[:40]): "truncated",
        _write(tmp_path / "cut.pt", pt[: len(pt) // 2]): "truncated or corrupt",
        _write(tmp_path / "junk.ckpt", pickle.dumps({"a": 1})[:5]): "truncated or corrupt",
    }
    (tmp_path / "emptydir").mkdir()
    cases[tmp_path / "emptydir"] = "without config.json"
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    cases[tmp_path / "noweights"] = "holds no diffusion_pytorch_model weights"
    for path, msg in cases.items():
        with pytest.raises(RevivalError, match=msg) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert text.count(". ") == 0 and "\n" not in text, text


def test_unsafe_pickle_is_refused(tmp_path):
    import fractions

    torch.save({"w": torch.zeros(2, 2), "odd": fractions.Fraction(1, 3)}, tmp_path / "odd.pt")
    with pytest.raises(RevivalError, match="safe load"):
        load_checkpoint(tmp_path / "odd.pt")


def test_save_refuses_inputs_and_bad_updates(checkpoint_files, tmp_path):
    folder = checkpoint_files["folder"]
    ckpt = load_checkpoint(folder)
    name = select_layers(ckpt.tensors)[0]
    w = ckpt.tensors[name]
    for out in (folder, folder / "diffusion_pytorch_model.safetensors", folder / "config.json", folder.parent):
        with pytest.raises(RevivalError, match="output path"):
            save_checkpoint(ckpt, out, {name: w})
    bad = {name: w.half()}, {name: w[:, :-1]}, {"not.a.layer": w}, {name: w.numpy()}
    for upd in bad:
        with pytest.raises(RevivalError):
            save_checkpoint(ckpt, tmp_path / "o", upd)
    assert not (tmp_path / "o").exists()
    one = load_checkpoint(checkpoint_files["safetensors_fp16"])
    with pytest.raises(RevivalError, match="output path"):
        save_checkpoint(one, checkpoint_files["safetensors_fp16"])
    with pytest.raises(RevivalError, match="is a folder"):
        save_checkpoint(one, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert save_checkpoint(one, tmp_path / "no" / "such" / "x.safetensors").is_file()   # missing parents are made


def test_failed_write_leaves_nothing(checkpoint_files, tmp_path, monkeypatch):
    import revival.io.writer as C

    def boom(*a, **k):
        raise OSError("disk full")

    for kind in ("safetensors_fp16", "folder"):
        ckpt = load_checkpoint(checkpoint_files[kind])
        monkeypatch.setattr(C, "_copy_safetensors", boom)
        with pytest.raises(OSError):
            save_checkpoint(ckpt, tmp_path / "o")
        monkeypatch.undo()
        assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_keeps_other_files(checkpoint_files, tmp_path):
    ckpt = load_checkpoint(checkpoint_files["folder"])
    save_checkpoint(ckpt, tmp_path / "o")
    name = select_layers(ckpt.tensors)[0]
    zero = {name: torch.zeros_like(ckpt.tensors[name])}
    with pytest.raises(RevivalError, match="--overwrite"):
        save_checkpoint(ckpt, tmp_path / "o", zero)
    assert torch.count_nonzero(load_checkpoint(tmp_path / "o").tensors[name]) > 0
    (tmp_path / "o" / "precious.txt").write_text("x")  # the user's own file in the output folder
    save_checkpoint(ckpt, tmp_path / "o", zero, overwrite=True)
    assert torch.count_nonzero(load_checkpoint(tmp_path / "o").tensors[name]) == 0
    assert (tmp_path / "o" / "precious.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    one = load_checkpoint(checkpoint_files["safetensors_fp16"])
    (tmp_path / "f.safetensors").write_bytes(b"mine")
    with pytest.raises(RevivalError, match="--overwrite"):
        save_checkpoint(one, tmp_path / "f.safetensors")
    assert (tmp_path / "f.safetensors").read_bytes() == b"mine"
    save_checkpoint(one, tmp_path / "f.safetensors", overwrite=True)
    assert load_checkpoint(tmp_path / "f.safetensors").format == "safetensors"


def test_stale_temporaries_of_a_killed_run_are_removed(checkpoint_files, tmp_path):
    import os
    import subprocess
    import sys

    from revival.io import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale_dir = tmp_path / f".o.revival-{dead}-abc.tmp"
    stale_dir.mkdir()
    (stale_dir / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 100)
    live = tmp_path / f".o.revival-{os.getpid()}-def.tmp"
    live.write_bytes(b"")
    other = tmp_path / ".o.something.tmp"
    other.write_bytes(b"")
    save_checkpoint(load_checkpoint(checkpoint_files["folder"]), tmp_path / "o")
    assert not stale_dir.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "o") == []


def test_source_changed_on_disk_is_detected(checkpoint_files, tmp_path):
    src = tmp_path / "in.safetensors"
    shutil.copyfile(checkpoint_files["safetensors_fp16"], src)
    ckpt = load_checkpoint(src)
    src.write_bytes(src.read_bytes() + b"")  # rewritten: new mtime
    import os
    os.utime(src, ns=(0, 0))
    with pytest.raises(RevivalError, match="changed on disk"):
        save_checkpoint(ckpt, tmp_path / "o.safetensors")


def test_check_finite_and_write_json(tmp_path):
    t = {"a": torch.ones(2, 2), "b": torch.tensor([[1.0, float("nan")], [0.0, 1.0]]).half()}
    check_finite(t, ["a"])
    with pytest.raises(RevivalError, match="NaN/inf"):
        check_finite(t, ["a", "b"])
    out = write_report(tmp_path / "r.json", {"x": float("nan"), "y": (1, 2)})
    assert json.loads(out.read_text()) == {"x": None, "y": [1, 2]}
    with pytest.raises(RevivalError):
        write_report(tmp_path / "r.json", {}, inputs=[tmp_path / "r.json"])
    with pytest.raises(RevivalError):
        check_output_path(tmp_path, [tmp_path / "r.json"])


@pytest.mark.parametrize("kind", ["folder_sharded", "ldm_safetensors", "torch_pt"])
def test_streaming_writer_one_layer_at_a_time(checkpoint_files, tmp_path, kind):
    from revival.io import CheckpointWriter

    src = checkpoint_files[kind]
    ckpt = load_checkpoint(src)
    layers = select_layers(ckpt.tensors)
    expect = {}
    out = tmp_path / ("o" + ("" if src.is_dir() else src.suffix))
    with CheckpointWriter(ckpt, out) as w:
        for i, name in enumerate(layers):
            expect[name] = torch.full_like(ckpt.tensors[name], float(i + 1))
            w.write(name, expect[name])
            ckpt.tensors.release()
            if kind != "torch_pt":
                assert ckpt.tensors.loaded() == {}
        assert not out.exists()  # nothing visible before the commit
    back = load_checkpoint(out)
    for name in ckpt.tensors:
        assert torch.equal(back.tensors[name], expect.get(name, ckpt.tensors[name])), name


def test_streaming_writer_aborts_on_error(checkpoint_files, tmp_path):
    from revival.io import CheckpointWriter

    ckpt = load_checkpoint(checkpoint_files["folder"])
    name = select_layers(ckpt.tensors)[0]
    with pytest.raises(RuntimeError, match="solver crashed"):
        with CheckpointWriter(ckpt, tmp_path / "o") as w:
            w.write(name, torch.zeros_like(ckpt.tensors[name]))
            raise RuntimeError("solver crashed")
    with pytest.raises(RevivalError, match="dtype"):
        with CheckpointWriter(ckpt, tmp_path / "o") as w:
            w.write(name, torch.zeros_like(ckpt.tensors[name]).double())
    assert list(tmp_path.iterdir()) == []
