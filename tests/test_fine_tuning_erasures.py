"""The fine-tuning erasures (anchor, ESD, robust): what each does to the testbed's denoising, the
whole UNet and report written by `revival unlearn --method`, same seed -> same bytes, the
refusals, and every registered member on a tiny local Stable Diffusion (`sd_data`)."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import file_bytes
from revival.cli import main as cli
from revival.errors import RevivalError
from revival.unlearn import ERASURES, ErasureConfig

CONCEPT, ANCHOR = "trouser", "dress"
FAST = dict(steps=20, batch=8, lr=3e-4, seed=0)


@pytest.fixture(scope="module")
def testbed():
    from revival.model.denoise import Denoiser
    from revival.model.loader import load_model
    from revival.unlearn import testbed_data

    model = load_model("testbed", device="cpu")
    d = Denoiser(model)
    data = testbed_data(d, CONCEPT, ANCHOR, per_class=64, seed=0)
    original = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    return model, d, data, original


def denoising_losses(model, d, data) -> dict[str, float]:
    """Each part's denoising loss at fixed draws: the concept's images under its captions, the
    anchor's images under the concept's captions, the retained classes under their own."""
    gen = torch.Generator().manual_seed(123)
    out = {}
    with torch.no_grad():
        for name, (x0, states) in (("concept", data.concept_batch(gen, 64)), ("anchor", data.anchor_batch(gen, 64)),
                                   ("retain", data.retain_batch(gen, 64))):
            t, noise = d.draw(len(x0), gen, x0.shape[1:])
            out[name] = float(F.mse_loss(d.predict(model.unet, d.noisy(x0, t, noise), t, states),
                                         d.target(x0, t, noise)))
    return out


@pytest.mark.parametrize("method", ["anchor", "esd"])
def test_an_erasure_raises_the_concepts_loss_not_the_retained(testbed, method):
    model, d, data, original = testbed
    model.unet.load_state_dict(original)
    before = denoising_losses(model, d, data)
    report = ERASURES.get(method)(model, data, ErasureConfig(**FAST))
    after = denoising_losses(model, d, data)
    state = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    model.unet.load_state_dict(original)
    changed = {k for k in state if not torch.equal(state[k], original[k])}
    assert report["steps"] == FAST["steps"] and len(changed) > 0.9 * len(state) * (0.5 if method == "esd" else 1)
    if method == "esd":  # ESD-u: the cross-attention stays the original's, everything else trains
        assert changed and not any(".attn2." in k for k in changed)
        assert all(k in changed for k in state if ".attn2." not in k and k.endswith(".weight"))
    rise = {k: after[k] / before[k] for k in after}
    assert rise["concept"] > 1.1 * rise["retain"], rise  # the concept's own images no longer denoise
    assert rise["retain"] < 1.1, rise
    if method == "anchor":  # the concept's captions now draw the anchor
        assert rise["anchor"] < 0.95, rise


def cli_args(out, *extra) -> list[str]:
    return ["unlearn", "--model", "testbed", "--concept", CONCEPT, "--device", "cpu", "--quiet", "-o", str(out),
            *extra]


def test_the_cli_writes_the_whole_unet_and_its_report_and_a_seed_repeats_it(testbed, tmp_path, capsys):
    from revival.io import load_checkpoint

    original = testbed[3]
    erasure = ["--method", "anchor", "--anchor", ANCHOR, "--steps", "4", "--batch", "4", "--images", "16",
               "--seed", "3"]
    assert cli(cli_args(tmp_path / "a", *erasure)) == 0
    assert cli(cli_args(tmp_path / "b", *erasure)) == 0
    assert "erased 'trouser' by anchor" in capsys.readouterr().out
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")  # same seed, same bytes
    assert (tmp_path / "a" / "config.json").is_file()  # the input's format: a diffusers folder
    tensors = load_checkpoint(tmp_path / "a").tensors
    assert set(tensors) == set(original)
    changed = [k for k in original if not torch.equal(tensors[k], original[k])]
    assert len(changed) > 0.9 * len(original)  # every trained tensor written, not only some
    report = json.loads((tmp_path / "a.report.json").read_text())
    assert report["method"] == "anchor" and report["concept"] == CONCEPT and report["config"]["seed"] == 3
    assert report["config"]["steps"] == 4 and report["data"]["anchor"] == ANCHOR
    assert report["data"]["concept_images"] == 16 and report["erasure"]["steps"] == 4
    assert report["device"] == "cpu" and report["seconds"] > 0


@pytest.mark.parametrize("extra,word", [
    (["--method", "esd", "--skill-ratio", "0.1"], "--skill-ratio"),
    (["--method", "anchor", "--target-erasure", "0.2"], "--target-erasure"),
    (["--method", "esd", "--modules", "ff"], "--modules"),
    (["--method", "anchor", "--ratio", "0.1"], "--ratio"),
    (["--method", "cad", "--lr", "0.1"], "--lr"),
    (["--method", "conceptprune", "--anchor", "dress"], "--anchor"),
    (["--batch", "4"], "--batch"),
    (["--method", "neurons", "--retain-weight", "2"], "--retain-weight"),
    (["--method", "anchor", "--lr", "-1"], "--lr"),
    (["--method", "esd", "--steps", "0"], "--steps"),
    (["--method", "esd", "--esd-eta", "-1"], "--esd-eta"),
    (["--method", "conceptprune", "--esd-eta", "2"], "--esd-eta"),
    (["--method", "anchor", "--anchor", "a photo"], "--anchor"),
    (["--method", "esd", "--images", "0"], "--images"),
    (["--method", "forget"], "--method"),
])
def test_the_cli_refuses_bad_options_in_one_sentence_and_writes_nothing(tmp_path, capsys, extra, word):
    out = tmp_path / "out"
    assert cli(cli_args(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err
    assert list(tmp_path.iterdir()) == []


def test_erase_checks_the_method_before_loading_anything(tmp_path):
    from revival.unlearn.run import erase

    with pytest.raises(RevivalError, match="unknown erasure method 'forget'"):
        erase("forget", tmp_path / "no-such-model", CONCEPT, tmp_path / "out", config=ErasureConfig())
    with pytest.raises(RevivalError, match="--esd-eta"):
        ErasureConfig(esd_eta=-1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from tiny_models import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("sd"))


@pytest.mark.parametrize("method", sorted(set(ERASURES.names()) | {"robust"}))
def test_every_erasure_runs_on_a_local_sd_folder(tiny_sd, tmp_path, method):
    from revival.io import load_checkpoint
    from revival.unlearn.run import erase

    assert method in ERASURES, f"the erasure {method!r} is not registered"
    config = ErasureConfig(steps=3, batch=2, lr=1e-3, seed=0, secret_seed=1)
    result = erase(method, tiny_sd, "cat", tmp_path / "unet", config=config, device="cpu", progress=False,
                   images=2, inference_steps=2)
    report = json.loads((tmp_path / "unet.report.json").read_text())
    assert result["report"] == str(tmp_path / "unet.report.json") and report["method"] == method
    assert report["data"]["source"] == "generated by the original model" and report["data"]["anchor"] == "a photo"
    assert report["data"]["concept_images"] == report["data"]["anchor_images"] == 2
    before, after = load_checkpoint(tiny_sd / "unet").tensors, load_checkpoint(tmp_path / "unet").tensors
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed
    if method == "esd":
        assert not any(".attn2." in k for k in changed)


def test_robust_buries_every_weight_under_secret_noise_and_without_meta_never_reads_the_concept(testbed, monkeypatch):
    """robust: no weight matrix keeps the original's values, the noise is the OS's unless a
    research run fixes it, and without its simulated relearning attacker (meta=0) the concept's
    images are never used (as in a model trained without them)."""
    model, d, data, original = testbed

    def forbidden(*a, **k):
        raise AssertionError("robust read the concept's images")

    monkeypatch.setattr(data, "concept_batch", forbidden)
    member = ERASURES.get("robust")
    runs = []
    for secret in (None, None, 7, 7):
        model.unet.load_state_dict(original)
        report = member(model, data, ErasureConfig(steps=3, batch=8, lr=1e-3, seed=0, secret_seed=secret), meta=0)
        runs.append({k: v.detach().clone() for k, v in model.unet.state_dict().items()})
    model.unet.load_state_dict(original)
    assert report["reset_tensors"] > 0 and 0 < report["reset"] < 1
    mats = [k for k, v in original.items() if v.ndim >= 2]
    for k in mats:   # every matrix and kernel moved, by more than 3 optimiser steps could move it
        rel = float((runs[0][k] - original[k]).norm() / original[k].norm())
        assert rel > 0.3, (k, rel)
    differ = lambda a, b: any(not torch.equal(a[k], b[k]) for k in mats)
    assert differ(runs[0], runs[1])          # secret by default: two publishers' runs share no noise
    assert not differ(runs[2], runs[3])      # a research seed repeats the run bit for bit
    assert differ(runs[0], runs[2])


def test_robusts_simulated_relearning_reads_the_concept_only_to_attack_a_copy(testbed, monkeypatch):
    """meta > 0: the concept's images are drawn (by the simulated attacker), the release changes (same
    seeds, meta on vs off), and a seed repeats it."""
    model, d, data, original = testbed
    member = ERASURES.get("robust")
    calls = []
    real = data.concept_batch
    monkeypatch.setattr(data, "concept_batch", lambda gen, n: calls.append(n) or real(gen, n))
    runs = {}
    for meta in (0.0, 0.1, 0.1):
        model.unet.load_state_dict(original)
        n = len(calls)
        member(model, data, ErasureConfig(steps=4, batch=8, lr=1e-3, seed=0, secret_seed=7), meta=meta)
        runs.setdefault(meta, []).append(({k: v.detach().clone() for k, v in model.unet.state_dict().items()},
                                          len(calls) - n))
    model.unet.load_state_dict(original)
    assert runs[0.0][0][1] == 0 and runs[0.1][0][1] > 0
    off, on, again = runs[0.0][0][0], runs[0.1][0][0], runs[0.1][1][0]
    mats = [k for k, v in original.items() if v.ndim >= 2]
    assert any(not torch.equal(off[k], on[k]) for k in mats)
    assert all(torch.equal(on[k], again[k]) for k in on)
