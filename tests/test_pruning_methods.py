"""Every pruning-based unlearning method on the testbed and on a local SD folder; `revival inspect`
finds each method's pruned layers by their zeros alone and names the method they look like."""
import json

import pytest
import torch

from revival.cli import main as cli
from revival.release.layers import detect_pruned_layers
from revival.release.masks import guess_method
from revival.unlearn.conceptprune import apply_masks, concept_prompts
from revival.unlearn.methods import CONCEPTPRUNE_MODULES, make_masks

FAST = dict(seed=0, inference_steps=3)
CASES = {
    # label: (method, modules, ratio, steps, suffixes of the pruned weights, expected look)
    "conceptprune": ("conceptprune", None, 0.05, 2, ("ff.net.2.weight",), "conceptprune"),
    "conceptprune-proj": ("conceptprune", "ff.net.0.proj", 0.05, 2, ("ff.net.0.proj.weight",), None),
    "conceptprune-to_v": ("conceptprune", "attn2.to_v", 0.05, 2, ("attn2.to_v.weight",), None),
    "cad": ("cad", None, 0.05, None, ("ff.net.0.proj.weight", "ff.net.2.weight"), "cad"),
    "neurons": ("neurons", "ff", 0.2, 2, ("ff.net.0.proj.weight",), "neurons"),
}


@pytest.fixture(scope="module")
def testbed():
    from revival.testbed import load_pipeline

    pipe = load_pipeline()
    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    return pipe, original


@pytest.mark.parametrize("label", sorted(CASES))
def test_method_on_the_testbed_is_found_by_its_zeros(testbed, label):
    pipe, original = testbed
    method, modules, ratio, steps, suffixes, look = CASES[label]
    target, base = concept_prompts("sneaker", pipe.classes)
    masks, result = make_masks(method, pipe, target[:2], base[:4], ratio=ratio, steps=steps, modules=modules, **FAST)
    assert torch.equal(pipe.unet.state_dict()[next(iter(masks))], original[next(iter(masks))])  # model untouched
    pruned = sorted(k for k, m in masks.items() if m.ndim == 2 and m.any())
    assert pruned and all(k.endswith(suffixes) for k in pruned)
    assert {k.rsplit("transformer_blocks", 1)[1].split(".", 2)[2] for k in pruned} == set(suffixes)
    assert result.to_dict()["method"] == method and result.pruned == sum(int(masks[k].sum()) for k in pruned)
    unlearned = {**original, **apply_masks(original, masks)}
    found = detect_pruned_layers(unlearned)
    assert sorted(p.name for p in found) == pruned          # exactly the pruned layers, nothing else
    if look is not None:
        assert guess_method(found) == look
    if method == "neurons":                                  # whole units: rows, and their biases zeroed
        for p in found:
            assert p.pattern.kind == "rows"
            bias = unlearned[p.name[:-len("weight")] + "bias"]
            assert torch.equal(bias == 0, (unlearned[p.name] == 0).all(1))
    if method == "cad":                                      # the same count in every row
        assert all(p.pattern.fixed_per_row == 1.0 and p.pattern.rows_touched == 1.0 for p in found)
    # seeded: the same call gives the same masks
    again, _ = make_masks(method, pipe, target[:2], base[:4], ratio=ratio, steps=steps, modules=modules, **FAST)
    assert all(torch.equal(again[k], masks[k]) for k in masks)


def test_conceptprune_module_presets_are_regexes():
    import re

    sample = {"ff": ("ff.net.2", "ff.net.0.proj"), "to_v": ("attn1.to_v", "attn2.to_v")}
    for name, rx in CONCEPTPRUNE_MODULES.items():
        for module in sample.get(name, (name,)):
            assert re.compile(rx).search(f"down_blocks.1.attentions.0.transformer_blocks.0.{module}")
        assert not re.compile(rx).search("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from tiny_models import make_tiny_sd

    root = tmp_path_factory.mktemp("sd")
    sd = make_tiny_sd(root)
    (root / "target.txt").write_text("a red cat\na small cat\n")
    (root / "base.txt").write_text("a red box\na small box\n")
    return root, sd


@pytest.mark.parametrize("method,extra,suffixes", [
    ("conceptprune", ["--skill-ratio", "0.3"], ("ff.net.2.weight",)),
    ("conceptprune", ["--skill-ratio", "0.3", "--modules", "ff.net.0.proj"], ("ff.net.0.proj.weight",)),
    ("cad", ["--ratio", "0.2"], ("ff.net.0.proj.weight", "ff.net.2.weight")),
    ("neurons", ["--ratio", "0.2"], ("ff.net.0.proj.weight",)),
])
def test_unlearn_cli_on_a_local_sd_folder_then_inspect_names_the_layers(tiny_sd, method, extra, suffixes, capsys):
    root, sd = tiny_sd
    out = root / f"out-{method}-{len(extra)}"
    rc = cli(["unlearn", "--model", str(sd), "--method", method, "--concept", "cat", "--device", "cpu",
              "--target-prompts", str(root / "target.txt"), "--base-prompts", str(root / "base.txt"),
              "--steps", "2", "--inference-steps", "2", "--quiet", "-o", str(out), *extra])
    assert rc == 0
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["method"] == method and report["totals"]["pruned"] > 0
    pruned = sorted(k for k, v in report["layers"].items() if v["pruned"] > 0)
    capsys.readouterr()
    assert cli(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(l["name"] for l in info["found"]["layers"]) == pruned
    assert all(k.endswith(suffixes) for k in pruned) and info["exposed"] is True
    assert cli(["inspect", str(out)]) == 0                   # the table names the look too
    assert "looks like" in capsys.readouterr().out
    # the attack with no options revives every pruned layer (not only ff.net.2)
    assert cli(["attack", str(out), "-o", str(root / f"rev-{out.name}"), "--quiet"]) == 0
    rep = json.loads((root / f"rev-{out.name}.report.json").read_text())
    attacked = sorted(l["name"] for l in rep["attack"]["layers"] if not l["skipped"])
    assert attacked == pruned
    if method == "neurons":                                   # whole rows: an explicit answer per layer
        assert all(l["whole_rows"]["rows"] > 0 and l["whole_rows"]["note"] for l in rep["attack"]["layers"])


def test_unlearn_cli_rejects_bad_method_options(tiny_sd, capsys):
    root, sd = tiny_sd
    rc = cli(["unlearn", "--model", str(sd), "--method", "conceptprune", "--ratio", "0.1", "--concept", "cat",
              "--target-prompts", str(root / "target.txt"), "--base-prompts", str(root / "base.txt"),
              "-o", str(root / "never")])
    assert rc == 2 and "--ratio is for cad and neurons" in capsys.readouterr().err
    assert not (root / "never").exists()


def test_conceptprune_on_the_real_text_encoder_feed_forwards_found_and_revived():
    from revival.attack import AttackConfig, revive
    from revival.testbed.text import shared_encoder
    from revival.unlearn.text_encoder import text_encoder_masks

    enc = shared_encoder()
    target, base = concept_prompts("sneaker", list(__import__("revival.testbed", fromlist=["CLASSES"]).CLASSES))
    masks = text_encoder_masks(enc.model, enc.tokenizer, target, base, skill_ratio=0.05, max_length=16)
    assert sorted(masks) == [f"encoder.layer.{i}.output.dense.weight" for i in range(6)]   # not attention.output
    original = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
    pruned = {**original, **apply_masks(original, masks)}
    found = detect_pruned_layers(pruned)
    assert sorted(p.name for p in found) == sorted(k for k, m in masks.items() if m.any())
    updates, result = revive(pruned, [p.name for p in found][:2], AttackConfig(), progress=False)  # two: time
    right = n = 0
    for k in updates:
        kept = masks[k] & (updates[k] != 0)
        right += int(((updates[k][kept] > 0) == (original[k][kept] > 0)).sum())
        n += int(kept.sum())
    assert n > 0 and right / n >= 0.75                      # intact intermediate.dense partners help
    assert all(l.partner and l.partner.endswith("intermediate.dense.weight") for l in result.layers)


def test_full_single_file_with_text_encoder_every_pruned_layer_found_and_attacked(tiny_unet, tmp_path, capsys):
    from safetensors.torch import save_file

    from conftest import to_ldm_full
    from revival.io import diffusers_to_ldm
    from revival.release.masks import synthetic_prune_mask

    sd = {k: v.clone() for k, v in tiny_unet.original.items()}
    g = torch.Generator().manual_seed(9)
    te = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp."
    fc1 = torch.randn(64, 4, generator=g) @ torch.randn(4, 16, generator=g) + 0.1 * torch.randn(64, 16, generator=g)
    fc2 = 0.5 * fc1.T + 0.05 * torch.randn(16, 64, generator=g)
    ff2 = next(k for k in sd if k.endswith("ff.net.2.weight"))
    proj = ff2.replace("ff.net.2", "ff.net.0.proj")
    per_row = lambda w, k: torch.zeros_like(w, dtype=torch.bool).scatter_(1, w.abs().topk(k, dim=1).indices, True)  # noqa: E731
    sd[ff2] = sd[ff2].masked_fill(synthetic_prune_mask(sd[ff2], 0.1, seed=1), 0)
    sd[proj] = sd[proj].masked_fill(per_row(sd[proj], 2), 0)
    full = to_ldm_full({k: v.half() if v.is_floating_point() else v for k, v in sd.items()})
    full[te + "fc1.weight"] = fc1.half()
    full[te + "fc2.weight"] = fc2.masked_fill(synthetic_prune_mask(fc2, 0.1, seed=2), 0).half()
    path = tmp_path / "full.safetensors"
    save_file(full, str(path))
    assert cli(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    found = sorted(l["name"] for l in info["found"]["layers"])
    assert found == sorted([ff2, proj, te + "fc2.weight"])             # UNet (both ff) and the text encoder
    assert cli(["attack", str(path), "-o", str(tmp_path / "rev.safetensors"), "--quiet"]) == 0
    rep = json.loads((tmp_path / "rev.safetensors.report.json").read_text())
    layers = {l["name"]: l for l in rep["attack"]["layers"]}
    assert sorted(layers) == found and all(l["kept"] > 0 for l in layers.values())
    assert layers[ff2]["partner_pruned"] and layers[proj]["partner_pruned"]
    assert layers[te + "fc2.weight"]["partner"] == te + "fc1.weight"
    from safetensors.torch import load_file

    out = load_file(str(tmp_path / "rev.safetensors"))
    assert diffusers_to_ldm(ff2) in out and torch.equal(out[te + "fc1.weight"], full[te + "fc1.weight"])


def test_cad_takes_few_inference_steps_without_conceptprune_steps(tiny_sd):
    root, sd = tiny_sd
    out = root / "cad-few-steps"
    assert cli(["unlearn", "--model", str(sd), "--method", "cad", "--ratio", "0.2", "--concept", "cat",
                "--target-prompts", str(root / "target.txt"), "--base-prompts", str(root / "base.txt"),
                "--inference-steps", "2", "--device", "cpu", "--quiet", "-o", str(out)]) == 0
    assert json.loads(out.with_name(out.name + ".report.json").read_text())["config"]["inference_steps"] == 2
