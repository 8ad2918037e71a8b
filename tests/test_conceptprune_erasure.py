"""ConceptPrune: hooks, statistics, masks, application -- on a tiny random diffusers UNet."""
from __future__ import annotations

import json

import pytest
import torch

from revival.errors import RevivalError
from revival.unlearn.conceptprune import (
    ConceptPruneConfig,
    LayerStats,
    apply_masks,
    collect_activations,
    conceptprune,
    conceptprune_masks,
    load_masks,
    object_prompts,
    save_masks,
    step_mask,
    concept_prompts,
)
from tiny_models import make_tiny_sd


def make_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    ).eval()


class TinyPipeline:
    """Enough of a text-to-image pipeline: prompt -> hashed token embeddings, a few
    denoising steps with ONE unet forward per step (cond+uncond batched, as with CFG)."""

    def __init__(self, unet, steps=4):
        self.unet = unet
        self.steps = steps
        self.calls = 0

    def embed(self, prompts):
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, p)) % 10007)
            out.append(torch.randn(6, 32, generator=g))
        return torch.stack(out)

    def __call__(self, prompts, seeds, steps=None, guidance=3.0):
        steps = steps or self.steps
        self.calls += 1
        cond = self.embed(prompts)
        uncond = self.embed([""] * len(prompts))
        x = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in seeds])
        for t in range(steps):
            eps = self.unet(torch.cat([x, x]), 999 - 100 * t, torch.cat([uncond, cond])).sample
            e_u, e_c = eps.chunk(2)
            x = x - 0.1 * (e_u + guidance * (e_c - e_u))
        return x.clamp(0, 1)


@pytest.fixture(scope="module")
def unet():
    return make_unet()


def test_config_validation():
    for kwargs in ({"skill_ratio": 0}, {"skill_ratio": 1.5}, {"steps": 0}, {"seed": -1},
                   {"batch_size": 0}, {"modules": "("}, {"halves": "uncond"}, {"steps": 5, "inference_steps": 3}):
        with pytest.raises(RevivalError):
            ConceptPruneConfig(**kwargs)
    assert ConceptPruneConfig().skill_ratio == 0.02 and ConceptPruneConfig().steps == 10


def test_step_mask_topk_and_target_over_base_rule():
    # 2 rows x 4 columns; |W| = 1 everywhere so scores are the activations themselves.
    w = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, -1.0, 1.0, 0.5]])
    a_t = torch.tensor([0.9, 0.8, 0.1, 0.7])
    a_b = torch.tensor([0.1, 0.9, 0.0, 0.2])  # column 1: target < base
    m = step_mask(w, a_t, a_b, skill_ratio=0.5)  # k = 2 per row
    # row 0 scores: [.9, .8, .1, .7] -> top2 cols 0,1; col 1 fails target>base -> only col 0
    # row 1 scores: [1.8, .8, .1, .35] -> top2 cols 0,1 -> only col 0
    assert m.tolist() == [[True, False, False, False], [True, False, False, False]]
    # a larger ratio: top3 row0 -> 0,1,3 ; row1 -> 0,1,3 (.35 > .1); col 1 excluded
    m = step_mask(w, a_t, a_b, skill_ratio=0.75)
    assert m.tolist() == [[True, False, False, True], [True, False, False, True]]
    # k = 0 -> nothing
    assert not step_mask(w, a_t, a_b, skill_ratio=0.2).any()


def test_union_over_first_steps_only():
    w = torch.ones(1, 4)
    base = torch.zeros(3, 4)
    target = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])  # step t favours column t
    masks = conceptprune_masks({"l": w}, {"l": target}, {"l": base}, skill_ratio=0.25, steps=2)
    assert masks["l"].tolist() == [[True, True, False, False]]
    masks = conceptprune_masks({"l": w}, {"l": target}, {"l": base}, skill_ratio=0.25, steps=3)
    assert masks["l"].tolist() == [[True, True, True, False]]
    with pytest.raises(RevivalError):
        conceptprune_masks({"l": w}, {"l": target}, {"l": base}, skill_ratio=0.25, steps=4)


def test_layer_stats_normalises_each_token():
    s = LayerStats(in_features=2, steps=1)
    s.add_batch(0, torch.tensor([[[3.0, 4.0], [10.0, 0.0]]]))  # tokens normalised: (.6,.8), (1,0)
    a = s.norms()[0]
    assert torch.allclose(a, torch.tensor([((0.36 + 1.0) / 2) ** 0.5, (0.64 / 2) ** 0.5]))


def test_collect_counts_steps_and_stops_early(unet):
    pipe = TinyPipeline(unet, steps=6)
    forwards = []
    h = unet.register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:
        stats = collect_activations(pipe, unet, ["a", "b", "c"], steps=2, batch_size=2)
    finally:
        h.remove()
    # 2 pipeline calls, each stopped after 2 real forwards (the 3rd is refused by the hook)
    assert pipe.calls == 2 and len(forwards) == 6
    n_ff = sum(name.endswith("ff.net.2") for name, _ in unet.named_modules())
    assert len(stats) == n_ff == 4  # down 1, mid 1, up 2 transformer blocks
    for s in stats.values():
        assert s.tokens[0] == s.tokens[1] > 0
    with pytest.raises(RevivalError):
        collect_activations(TinyPipeline(unet, steps=1), unet, ["a"], steps=2)
    # only the conditional half of the CFG batch: half the tokens
    cond = collect_activations(pipe, unet, ["a", "b", "c"], steps=2, batch_size=2, halves="cond")
    for name, s in stats.items():
        assert torch.equal(cond[name].tokens * 2, s.tokens)


def test_unlearn_tiny_unet_changes_only_ff_net2_to_zero(unet):
    pipe = TinyPipeline(unet, steps=4)
    target = ["a sneaker", "a photo of a sneaker", "an image of a sneaker"]
    base = ["a bag", "a photo of a bag", "an image of a coat", "a shirt"]
    cfg = ConceptPruneConfig(skill_ratio=0.1, steps=3, batch_size=2)
    masks, result = conceptprune(pipe, target, base, cfg)
    sd = {k: v.clone() for k, v in unet.state_dict().items()}
    updates = apply_masks(sd, masks)
    assert updates and all(k.endswith("ff.net.2.weight") for k in updates)
    assert result.pruned > 0 and result.to_dict()["totals"]["pruned"] == result.pruned
    for k, new in updates.items():
        old = sd[k]
        changed = new != old
        assert changed.any()
        assert (new[changed] == 0).all()
        assert torch.equal(changed, masks[k] & (old != 0))
        # per step at most k per row -> at most steps*k per row
        k_row = int(0.1 * old.shape[1])
        assert int(masks[k].sum(1).max()) <= 3 * k_row
    # the inputs are untouched
    assert all(torch.equal(sd[k], v) for k, v in unet.state_dict().items())
    # same seed -> same masks; another seed -> other statistics
    masks2, _ = conceptprune(pipe, target, base, cfg)
    assert all(torch.equal(masks[k], masks2[k]) for k in masks)


def test_mask_file_roundtrip(tmp_path):
    m = {"a.ff.net.2.weight": torch.tensor([[True, False], [False, True]])}
    p = save_masks(m, tmp_path / "m.safetensors", metadata={"concept": "x"})
    back = load_masks(p)
    assert back.keys() == m.keys() and torch.equal(back["a.ff.net.2.weight"], m["a.ff.net.2.weight"])
    assert back["a.ff.net.2.weight"].dtype == torch.bool
    with pytest.raises(RevivalError):
        load_masks(tmp_path / "missing.safetensors")


def test_prompt_sets():
    t, b = concept_prompts("sneaker", ["bag", "sneaker", "coat"])
    assert all("sneaker" in p for p in t) and not any("sneaker" in p for p in b)
    assert len(b) == 2 * len(t)
    with pytest.raises(RevivalError):
        concept_prompts("zebra", ["bag"])
    t, b = object_prompts("church")
    from revival.unlearn.conceptprune import SCENES

    assert len(t) == len(b) == len(SCENES) == 12
    assert t[0] == f"a church in a {SCENES[0]}" and b[0] == f"a {SCENES[0]}"


# --------------------------------------------------------------------------- a tiny SD folder + CLI

def build_tiny_sd(path):
    """A random-init StableDiffusionPipeline around this file's UNet (4 latent channels)."""
    unet = make_unet()
    unet = type(unet).from_config({**unet.config, "in_channels": 4, "out_channels": 4})
    return make_tiny_sd(path, unet=unet, text_dim=32)


def test_cli_unlearn_on_a_local_sd_folder(tmp_path, capsys):
    from revival.io import load_checkpoint
    from revival.cli import main

    sd = build_tiny_sd(tmp_path / "sd")
    before = {k: v.clone() for k, v in load_checkpoint(sd / "unet").tensors.items()}
    (tmp_path / "t.txt").write_text("a sneaker in a road\na sneaker in a park\n")
    (tmp_path / "b.txt").write_text("a road\na park\n")
    out, masks = tmp_path / "pruned", tmp_path / "masks.safetensors"
    rc = main(["unlearn", "--model", str(sd), "--concept", "sneaker", "--target-prompts",
               str(tmp_path / "t.txt"), "--base-prompts", str(tmp_path / "b.txt"),
               "--skill-ratio", "0.05", "--steps", "2", "--inference-steps", "3",
               "-o", str(out), "--save-masks", str(masks), "--quiet"])
    assert rc == 0
    after = load_checkpoint(out)
    assert after.format == "diffusers" and set(after.tensors) == set(before)
    m = load_masks(masks)
    changed = [k for k in before if not torch.equal(before[k], after.tensors[k])]
    assert changed and all(k.endswith("ff.net.2.weight") for k in changed)
    for k in changed:
        diff = before[k] != after.tensors[k]
        assert (after.tensors[k][diff] == 0).all() and not (m[k] & ~diff & (before[k] != 0)).any()
    report = json.loads((tmp_path / "pruned.report.json").read_text())
    assert report["totals"]["pruned"] == sum(int(v.sum()) for v in m.values())
    assert report["config"]["skill_ratio"] == 0.05
    # bad input: one sentence, exit 2, no output
    assert main(["unlearn", "--model", str(tmp_path / "nope"), "--concept", "x", "-o", str(tmp_path / "o2")]) == 2
    assert main(["unlearn", "--model", str(sd), "--concept", "x", "-o", str(sd / "unet"), "--quiet"]) == 2
    assert main(["unlearn", "--model", str(sd), "--concept", "x", "--skill-ratio", "2", "-o", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert err.count("revival: error:") == 3 and "Traceback" not in err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    # the paper's word files by path: the same prompts as the hand-written files above
    (tmp_path / "scenes.txt").write_text("road\npark\n")
    rc = main(["unlearn", "--model", str(sd), "--concept", "sneaker", "--word-list", str(tmp_path / "scenes.txt"),
               "--skill-ratio", "0.05", "--steps", "2", "--inference-steps", "3", "-o", str(tmp_path / "w"), "--quiet"])
    assert rc == 0
    again = load_checkpoint(tmp_path / "w")
    assert all(torch.equal(again.tensors[k], after.tensors[k]) for k in changed)
    assert json.loads((tmp_path / "w.report.json").read_text())["n_target_prompts"] == 2
    assert main(["unlearn", "--model", str(sd), "--concept", "x", "--word-list", str(tmp_path / "scenes.txt"),
                 "--target-prompts", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o4")]) == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "o4").exists()


def test_task_prompts_from_word_lists():
    from revival.unlearn.conceptprune import task_prompts

    assert task_prompts("objects", "golf ball", ["road", "beach"]) == (
        ["a golf ball in a road", "a golf ball in a beach"], ["a road", "a beach"])
    t, b = task_prompts("artists", "Claude Monet", ["teapot"])
    assert t == ["a teapot in the style of Claude Monet"] and b == ["a photo of a teapot"]
    assert task_prompts("nudity", "nudity", ["dancer"]) == (["a photo of a naked dancer"], ["a photo of a dancer"])
    assert len(task_prompts("objects", "golf ball")[0]) == 12          # our own scenes
    with pytest.raises(RevivalError):
        task_prompts("styles", "x", ["a"])
    with pytest.raises(RevivalError, match="empty"):
        task_prompts("objects", "x", [])


def test_reference_pairs_for_church_and_garbage_truck():
    """The paper's two objects with their own (base, target) pairs come from the registry."""
    from revival.concepts.catalog import lookup, registry, unlearning_prompts
    from revival.unlearn.conceptprune import task_prompts

    t, b = task_prompts("objects", "church")
    assert len(t) == len(b) == 8
    assert (b[0], t[0]) == ("a road", "a church on a road") and (b[-1], t[-1]) == ("a forest", "a church in a forest")
    t, b = task_prompts("objects", "garbage truck")
    assert len(t) == 13 and ("a truck", "a garbage truck near a big truck") in list(zip(b, t))
    # an explicit word list still wins (the user asked for scenes)
    assert task_prompts("objects", "church", ["meadow"]) == (["a church in a meadow"], ["a meadow"])
    # one registry entry per ImageNette class (the reference's class names) and per testbed class
    entries, groups = registry()
    assert sorted(n for n, m in entries if m == "sd") == sorted(groups["imagenette"])
    assert sorted(n for n, m in entries if m == "testbed") == sorted(groups["testbed"])
    tench = lookup("tench", "sd")
    assert tench.classifier == "resnet50" and tench.skill_ratio == 0.02 and len(unlearning_prompts(tench)[0]) == 12
    with pytest.raises(RevivalError, match="unknown concept"):
        lookup("zebra", "sd")
