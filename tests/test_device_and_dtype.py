"""The device/dtype policy: the Stable Diffusion path (tiny random pipeline) and the testbed in
fp32 and bf16 on the CPU, and the same on CUDA where a GPU exists (skipped here when absent)."""
from __future__ import annotations

import pytest
import torch

from revival.runtime.device import DTYPES, placement, resolve_device, resolve_dtype
from revival.errors import RevivalError
from revival.model.loader import load_model
from revival.runtime.digest import unet_digest
from revival.unlearn.conceptprune import (ConceptPruneConfig, apply_masks, collect_activations, conceptprune,
                                          make_pipeline_call, object_prompts)
from tiny_models import make_tiny_sd

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
CFG = ConceptPruneConfig(skill_ratio=0.1, steps=2, inference_steps=3, batch_size=4)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def fp32_masks(tiny_sd):
    target, base = object_prompts("church")
    return conceptprune(load_model(tiny_sd, device="cpu", dtype="fp32"), target[:4], base[:4], CFG)[0]


def test_policy_defaults_and_refusals():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype(torch.float16, "cpu") == torch.float16
    assert placement("cpu", None).to_dict() == {"device": "cpu", "dtype": "fp32"}
    assert placement(None).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("fp8", "half", "float64"):
        with pytest.raises(RevivalError, match="--dtype"):
            resolve_dtype(bad, "cpu")
    with pytest.raises(RevivalError, match="--device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RevivalError, match="torch sees none"):
            resolve_device("cuda")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sd_path_on_device_and_dtype(tiny_sd, fp32_masks, device, dtype):
    """Loaded with torch_dtype on the device; statistics fp64 on the weights' device; masks made
    and applied there; images float32 in [0, 1], the same for the same seeds; the masks mean the
    same thing as fp32's on the CPU."""
    gen = load_model(tiny_sd, device=device, dtype=dtype)
    unet = gen.unet
    assert unet.dtype == DTYPES[dtype] and unet.device.type == device
    assert gen.pipe.text_encoder.dtype == DTYPES[dtype]
    target, base = object_prompts("church")
    stats = collect_activations(make_pipeline_call(gen, CFG), unet, target[:2], steps=2, batch_size=2)
    s = next(iter(stats.values()))
    assert s.sq.dtype == torch.float64 and s.sq.device.type == device and bool((s.tokens > 0).all())
    masks, result = conceptprune(gen, target[:4], base[:4], CFG)
    assert result.pruned > 0
    weights = {k: v for k, v in unet.state_dict().items() if k in masks}
    assert all(m.dtype == torch.bool and m.device == weights[k].device for k, m in masks.items())
    updates = apply_masks(weights, masks)
    for k, u in updates.items():
        assert u.dtype == DTYPES[dtype] and u.device.type == device
        assert bool((u[masks[k]] == 0).all()) and torch.equal(u[~masks[k]], weights[k][~masks[k]])
    # same meaning as fp32 on the CPU: the masks overlap almost entirely
    inter = sum(int((m.cpu() & fp32_masks[k]).sum()) for k, m in masks.items())
    union = sum(int((m.cpu() | fp32_masks[k]).sum()) for k, m in masks.items())
    assert inter / union >= 0.8
    a = gen(["a church", "a kitchen"], [3, 4], steps=2)
    b = gen(["a kitchen"], [4], steps=2)
    assert a.dtype == torch.float32 and a.device.type == "cpu" and a.shape == (2, 3, 16, 16)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, gen(["a church", "a kitchen"], [3, 4], steps=2))  # same batch: same bits
    # another batch: the same image up to the last bits of the batched kernels
    assert (a[1:] - b).abs().max() <= (1e-5 if dtype == "fp32" else 0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_testbed_in_bf16_draws_the_same_classes(device):
    """The testbed UNet in bf16 makes nearly the images of fp32 (same seeds) -- the classifier
    names the same classes -- and the content digest tells the two weight sets apart."""
    from revival.testbed import load_classifier

    f32 = load_model("testbed", device=device, dtype="fp32")
    b16 = load_model("testbed", device=device, dtype="bf16")
    assert b16.unet.dtype == torch.bfloat16 and b16.unet.device.type == device
    prompts, seeds = ["a photo of a trouser", "a photo of a bag", "a photo of a sneaker"], [7, 8, 9]
    x32, x16 = f32(prompts, seeds, steps=8), b16(prompts, seeds, steps=8)
    assert x16.dtype == torch.float32 and (x32 - x16).abs().mean() < 0.05
    clf = load_classifier()
    assert clf(x16) == clf(x32)
    assert unet_digest(f32.unet) != unet_digest(b16.unet)
    assert unet_digest(f32.unet) == unet_digest(load_model("testbed", device="cpu", dtype="fp32").unet)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_attack_and_defense_on_the_weights_device(tiny_unet, device, dtype):
    """The attack and the Gaussian defense take weights on any device and dtype, and give the
    CPU's result (noise and magnitudes are drawn from CPU generators)."""
    from revival import AttackConfig, obfuscate, revive

    dt = DTYPES[dtype]
    cpu = {k: tiny_unet.pruned[k].to(dt) for k in tiny_unet.layers}
    dev = {k: v.to(device) for k, v in cpu.items()}
    o_cpu, _ = obfuscate(cpu, tiny_unet.layers, seed=3)
    o_dev, _ = obfuscate(dev, tiny_unet.layers, seed=3)
    assert o_dev.keys() == o_cpu.keys() and all(o_dev[k].device.type == device for k in o_dev)
    assert all(torch.equal(o_dev[k].cpu(), o_cpu[k]) for k in o_cpu)
    cfg = AttackConfig(device=device, seed=1)
    r_dev, _ = revive(dev, tiny_unet.layers, cfg, progress=False)
    assert all(r_dev[k].dtype == dt and bool((r_dev[k] != 0).sum() > (dev[k] != 0).sum()) for k in r_dev)
