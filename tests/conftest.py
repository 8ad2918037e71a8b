"""Shared fixtures: a tiny random diffusers UNet (original and ConceptPrune-like pruned), saved
once per test session in every checkpoint format the toolkit reads."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# One thread for the whole suite: on this shared 2-core machine multithreaded kernels ran up to
# 30x slower under load (benchmarks/threads.py); tests do not need the second core.
torch.set_num_threads(1)
os.environ.setdefault("REVIVAL_THREADS", "1")  # the CLI in subprocesses too

# The slowest files first (see docs/testing.md): under pytest-xdist (`--dist loadfile`, a file to a
# worker) the long ones start at once and the short ones fill in beside them, so that no worker is
# left running one long file alone at the end. In one process the order changes nothing else.
SLOW_FILES_FIRST = (
    "test_readme_runs_as_written.py",
    "test_readme_robust_release_runs_as_written.py",
    "test_demo_tells_the_story.py",
    "test_sound_verdicts.py",
    "test_eval_unlearn_techniques.py",
    "test_testbed_style_and_attribute_tasks.py",
    "test_data_parallel_equals_one_process.py",
    "test_defense_secrets.py",
    "test_never_learned_calibration.py",
    "test_relearning_attacker.py",
    "test_embedded_testbed.py",
    "test_fine_tuning_erasures.py",
    "test_judges_say_no_item.py",
    "test_audit_verdicts_and_files.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: a file's own order is kept


TINY_UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4,
)
FF2 = "ff.net.2.weight"


def make_tiny_unet(seed: int = 0):
    """A tiny random-init UNet2DConditionModel (6 ff.net.2 layers: 16x64 x5, 32x128 x1)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.dim() >= 2:  # low-rank plus noise, like trained weights
                flat = p.reshape(p.shape[0], -1)
                r = min(4, *flat.shape)
                lr = torch.randn(flat.shape[0], r, generator=g) @ torch.randn(r, flat.shape[1], generator=g)
                flat.copy_((0.05 * lr / r**0.5 + 0.02 * torch.randn(flat.shape, generator=g)))
    return unet


def prune_state(sd: dict[str, torch.Tensor], ratio: float = 0.05, seed: int = 0) -> dict[str, torch.Tensor]:
    """ConceptPrune-like pruning of every ff.net.2 weight (exact zeros, column-clustered)."""
    from revival.release.masks import synthetic_prune_mask

    out = dict(sd)
    for i, (name, w) in enumerate(sd.items()):
        if name.endswith(FF2):
            mask = synthetic_prune_mask(w, ratio, seed=seed + i)
            out[name] = w.masked_fill(mask, 0)
    return out


def to_ldm_full(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full single-file (LDM-named) checkpoint: UNet under model.diffusion_model., plus a few
    VAE and text-encoder tensors that must survive untouched."""
    from revival.io import diffusers_to_ldm

    out = {}
    for name, w in sd.items():
        out[diffusers_to_ldm(name) or f"model.diffusion_model.{name}"] = w
    g = torch.Generator().manual_seed(123)
    out["first_stage_model.decoder.conv_in.weight"] = torch.randn(8, 4, 3, 3, generator=g).to(next(iter(sd.values())).dtype)
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    out["alphas_cumprod"] = torch.linspace(0.99, 0.01, 10, dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory):
    """Original and pruned tiny UNet as diffusers folders (fp32), and their state dicts."""
    root = tmp_path_factory.mktemp("unet")
    unet = make_tiny_unet(0)
    original = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    pruned = prune_state(original)
    unet.save_pretrained(root / "original")
    unet.load_state_dict(pruned)
    unet.save_pretrained(root / "pruned")
    layers = [k for k in original if k.endswith(FF2)]
    return SimpleNamespace(root=root, original_dir=root / "original", pruned_dir=root / "pruned",
                           original=original, pruned=pruned, layers=layers, model=unet)


@pytest.fixture(scope="session")
def checkpoint_files(tiny_unet, tmp_path_factory) -> dict[str, Path]:
    """The pruned tiny UNet in every supported format / naming / dtype."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("formats")
    unet, sd = tiny_unet.model, tiny_unet.pruned
    files: dict[str, Path] = {"folder": tiny_unet.pruned_dir}

    def fresh(dtype):
        unet.to(torch.float32).load_state_dict(sd)
        return unet.to(dtype)

    fresh(torch.float16).save_pretrained(root / "folder_fp16", variant="fp16")
    files["folder_fp16"] = root / "folder_fp16"
    fresh(torch.bfloat16).save_pretrained(root / "folder_bf16")
    files["folder_bf16"] = root / "folder_bf16"
    fresh(torch.float32).save_pretrained(root / "folder_sharded", max_shard_size="60KB")
    files["folder_sharded"] = root / "folder_sharded"
    (root / "folder_bin").mkdir()
    shutil.copyfile(tiny_unet.pruned_dir / "config.json", root / "folder_bin" / "config.json")
    torch.save(sd, root / "folder_bin" / "diffusion_pytorch_model.bin")
    files["folder_bin"] = root / "folder_bin"
    for dt, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        p = root / f"unet_{tag}.safetensors"
        save_file({k: v.to(dt) if v.is_floating_point() else v for k, v in sd.items()}, str(p),
                  metadata={"format": "pt", "note": "tiny"})
        files[f"safetensors_{tag}"] = p
    ldm16 = to_ldm_full({k: v.half() if v.is_floating_point() else v for k, v in sd.items()})
    save_file(ldm16, str(root / "sd_ldm_fp16.safetensors"), metadata={"format": "pt"})
    files["ldm_safetensors"] = root / "sd_ldm_fp16.safetensors"
    torch.save(sd, root / "unet.pt")
    files["torch_pt"] = root / "unet.pt"
    torch.save({"state_dict": to_ldm_full(sd), "global_step": 1234, "epoch": 5}, root / "sd_ldm.ckpt")
    files["torch_ckpt_ldm"] = root / "sd_ldm.ckpt"
    torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()},
               root / "unet_bf16.pt")
    files["torch_bf16"] = root / "unet_bf16.pt"
    assert json.loads((root / "folder_sharded" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    return files


def file_bytes(path: Path) -> dict[str, bytes]:
    """Every file's bytes under `path` (a file or a folder), by relative name."""
    path = Path(path)
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the embedded testbed
# Loaded once per session (per worker under pytest-xdist) and shared by every test module that reads
# it; each test gets the pipeline back with the committed weights in its UNet (`testbed_model`).

@pytest.fixture(scope="session")
def _testbed_session():
    from revival.evaluate.classifiers import get_classifier
    from revival.model.loader import load_model

    pipe = load_model("testbed", device="cpu", dtype="fp32")
    state = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    return pipe, state, get_classifier("testbed", device="cpu")


@pytest.fixture
def testbed_model(_testbed_session):
    """(the testbed pipeline on the CPU in fp32, a copy of its committed UNet weights, the testbed
    classifier). The pipeline is shared by the session: a test may load other weights into its
    UNet, and the committed ones are loaded back before and after it. Never modify the weights'
    tensors in place."""
    pipe, state, clf = _testbed_session
    pipe.unet.load_state_dict(state)
    yield pipe, state, clf
    pipe.unet.load_state_dict(state)


@pytest.fixture(scope="session")
def testbed_release(_testbed_session):
    """A real ConceptPrune release of the committed testbed: `testbed_release(concept, modules=None,
    ratio=0.05, steps=10)` -> SimpleNamespace(masks, release, layers). The statistics of the
    concept's prompts are collected once per (concept, modules, ratio, steps) for the session, and
    every call returns a fresh dict of the (shared, never to be modified in place) tensors."""
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, concept_statistics

    pipe, state, _ = _testbed_session
    built: dict[tuple, tuple] = {}

    def make(concept: str, modules: str | None = None, ratio: float = 0.05, steps: int = 10):
        key = (concept, modules, ratio, steps)
        if key not in built:
            cfg = ConceptPruneConfig(skill_ratio=ratio, steps=steps, **({"modules": modules} if modules else {}))
            pipe.unet.load_state_dict(state)
            try:
                stats = concept_statistics(pipe, *concept_prompts(concept, pipe.classes), cfg)
            finally:
                pipe.unet.load_state_dict(state)
            masks, _ = stats.masks(cfg)
            built[key] = (masks, {**state, **apply_masks(state, masks)}, sorted(masks))
        masks, release, layers = built[key]
        return SimpleNamespace(masks=dict(masks), release=dict(release), layers=list(layers))

    return make


# ----------------------------------------------------------------------------- a small experiment
# `revival experiment` of SMALL in one process, run once for the session: test_experiment_resumes_and_reproduces.py reads
# it (and resumes, re-runs and reproduces it beside it), test_data_parallel_equals_one_process.py compares torchrun's
# run with it.

SMALL = """
model = "testbed"
seeds_per_class = 1
skill_ratio = 0.05
unlearn_steps = 3
inference_steps = 4
batch_size = 4
stages = ["original", "unlearned", "revived"]
[[concepts]]
name = "sneaker"
"""


def files(root: Path) -> dict[str, bytes]:
    """Every file's bytes; an evaluation.json without its wall-clock "seconds"."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "evaluation.json":
                d = json.loads(data)
                d.pop("seconds")
                data = json.dumps(d).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="session")
def small_experiment(tmp_path_factory) -> Path:
    """A folder holding small.toml (SMALL) and its experiment run on the CPU in a/. Tests may add
    folders beside a/; nothing may change a/ itself (a second run into it must change nothing)."""
    from revival.cli import main

    root = tmp_path_factory.mktemp("exp")
    (root / "small.toml").write_text(SMALL)
    assert main(["experiment", str(root / "small.toml"), "--out", str(root / "a"), "--device", "cpu", "--quiet"]) == 0
    return root
