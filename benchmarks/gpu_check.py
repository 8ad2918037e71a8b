"""The model side on a GPU, end to end, in under 5 minutes on one card: pass/fail and timings.

    python benchmarks/gpu_check.py                 # cuda, fp16 (the policy's GPU default)
    python benchmarks/gpu_check.py --dtype bf16
    python benchmarks/gpu_check.py --device cpu --skip-full    # a CPU dry run of the same checks

Checks (each prints PASS/FAIL and its seconds):
 1. policy       --device/--dtype resolve to the GPU and fp16 by default.
 2. tiny SD      a tiny random StableDiffusionPipeline folder (tests/tiny_models.py) on the GPU in
                 the chosen dtype: `revival unlearn` (ConceptPrune statistics fp64 on the GPU,
                 masks on the GPU) -> `revival attack` -> `revival defend` -> `revival evaluate`
                 (images on the GPU, report written), each as the CLI runs it.
 3. testbed      `revival experiment` with the five stages on the embedded testbed, on the GPU.
 4. audit        `revival audit` with every attacker of the ladder on a testbed ConceptPrune release, on
                 the device (fp32, the audit's default) and on the CPU: every attacker must run, and
                 the two verdicts and each attacker's erased accuracy must agree.
 5. full UNet    a random-init UNet with SD v1.5's config (860M parameters, fp16, all tensors as a
                 diffusers folder, ff.net.2 pruned ~2%), attacked by `revival attack --device cuda`:
                 wall time including load and write, against the time to copy the folder (I/O floor).
Exit status 0 when every check passes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
RESULTS: list[tuple[str, bool, float, str]] = []


def check(name: str):
    def wrap(fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                note = fn(*a, **k) or ""
                ok = True
            except Exception as exc:  # report and go on with the other checks
                ok, note = False, f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            dt = time.perf_counter() - t
            RESULTS.append((name, ok, dt, note))
            print(f"{'PASS' if ok else 'FAIL'}  {name:<12} {dt:7.1f} s  {note}", flush=True)
        return run
    return wrap


def cli(*argv: str) -> None:
    from revival.cli import main

    rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"`revival {' '.join(map(str, argv))}` exited {rc}")


@check("policy")
def policy(device: str, dtype: str | None) -> str:
    from revival.runtime.device import placement

    p = placement(device, dtype)
    if device.startswith("cuda"):
        assert p.device.type == "cuda", p
        assert dtype is not None or p.dtype == torch.float16, "the GPU default must be fp16"
    return f"{p.device} {p.dtype_name}"


@check("tiny SD")
def tiny_sd(tmp: Path, device: str, dtype: str) -> str:
    spec = importlib.util.spec_from_file_location("tiny_models", ROOT / "tests" / "tiny_models.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    sd = tiny.make_tiny_sd(tmp / "tiny")
    from revival.model.loader import load_model
    from revival.unlearn.conceptprune import ConceptPruneConfig, collect_activations, make_pipeline_call, object_prompts

    gen = load_model(sd, device=device, dtype=dtype)
    assert gen.unet.device.type == torch.device(device).type, gen.unet.device
    stats = collect_activations(make_pipeline_call(gen, ConceptPruneConfig(steps=2, inference_steps=3)), gen.unet,
                                object_prompts("church")[0][:2], steps=2)
    s = next(iter(stats.values()))
    assert s.sq.device.type == gen.unet.device.type and s.sq.dtype == torch.float64
    cli("unlearn", "--model", sd, "--concept", "church", "--skill-ratio", "0.1", "--steps", "2",
        "--inference-steps", "3", "--device", device, "--dtype", dtype, "-o", tmp / "pruned",
        "--save-masks", tmp / "masks.safetensors", "--quiet")
    cli("attack", tmp / "pruned", "-o", tmp / "revived", "--device", device, "--quiet")
    cli("defend", tmp / "pruned", "-o", tmp / "defended", "--quiet")
    rows = tmp / "rows.csv"
    rows.write_text("prompt,class,seed\n" + "".join(f"an image of a {c},{c},{s}\n" for c in ("bag", "coat")
                                                     for s in (1000, 1001)))
    cli("evaluate", "--model", sd, "--unet", tmp / "revived", "--prompts", rows, "--concept", "bag",
        "--classifier", "testbed", "--steps", "3", "--device", device, "--dtype", dtype,
        "--out", tmp / "eval", "--quiet")
    rep = json.loads((tmp / "eval" / "evaluation.json").read_text())
    names = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
    assert rep["erased_images"] == 2 and rep["settings"]["dtype"] == names[dtype], rep["settings"]
    return f"unlearn -> attack -> defend -> evaluate in {dtype}"


@check("testbed")
def testbed(tmp: Path, device: str, dtype: str) -> str:
    cfg = tmp / "exp.toml"
    cfg.write_text('model = "testbed"\nseeds_per_class = 2\nskill_ratio = 0.05\n[[concepts]]\nname = "sneaker"\n')
    cli("experiment", cfg, "--out", tmp / "exp", "--device", device, "--dtype", dtype, "--quiet")
    row = json.loads((tmp / "exp" / "results.json").read_text())["rows"][0]
    return "erased " + ", ".join(f"{k} {v:.2f}" for k, v in row["erased"].items())


def audit_run(tmp: Path, release: Path, device: str, label: str) -> dict:
    from revival.cli import main

    out = tmp / f"audit-{label}"
    rc = main(["audit", "--model", "testbed", "--release", str(release), "--concept", "sneaker", "--out", str(out),
               "--erased-images", "20", "--preserved-images", "1", "--device", device, "--quiet"])
    data = json.loads((out / "audit.json").read_text())
    from revival.audit.verdict import exit_code

    assert rc == exit_code(data["verdict"]), (rc, data["verdict"])
    return data


@check("audit")
def audit_check(tmp: Path, device: str) -> str:
    from revival.attack.attackers import ATTACKERS

    cli("unlearn", "--model", "testbed", "--concept", "sneaker", "--skill-ratio", "0.05", "--device", device,
        "-o", tmp / "release.safetensors", "--quiet")
    here = audit_run(tmp, tmp / "release.safetensors", device, "device")
    bad = {n: a.get("reason") for n, a in here["attacks"].items() if a["status"] != "ran"}
    assert set(here["attacks"]) == set(ATTACKERS) and not bad, f"attackers that did not run: {bad}"
    ref = audit_run(tmp, tmp / "release.safetensors", "cpu", "cpu-reference")
    assert here["verdict"] == ref["verdict"], (here["verdict"], ref["verdict"])
    diffs = {n: abs(here["attacks"][n]["erased"] - ref["attacks"][n]["erased"]) for n in ATTACKERS}
    assert max(diffs.values()) <= 0.10, f"erased accuracy differs from the CPU's: {diffs}"
    return (f"verdict {here['verdict']} (CPU: {ref['verdict']}); largest gain {here['largest_gain']['gain']:+.2f} by "
            f"{here['largest_gain']['attacker']}; max |erased - CPU's| {max(diffs.values()):.2f}")


@check("full UNet")
def full_unet(tmp: Path, device: str) -> str:
    from diffusers import UNet2DConditionModel

    from revival.release.masks import synthetic_prune_mask

    torch.manual_seed(0)
    with torch.device(device if device.startswith("cuda") else "cpu"):
        unet = UNet2DConditionModel(**SD15_UNET).half()
    with torch.no_grad():
        for i, (name, p) in enumerate(unet.named_parameters()):
            if name.endswith("ff.net.2.weight"):
                mask = synthetic_prune_mask(p.float().cpu(), 0.02, seed=i).to(p.device)
                p.masked_fill_(mask, 0)
    src = tmp / "sd15-unet"
    unet.save_pretrained(src)
    n = sum(p.numel() for p in unet.parameters())
    del unet
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    t = time.perf_counter()
    shutil.copytree(src, tmp / "copy")
    floor = time.perf_counter() - t
    t = time.perf_counter()
    cli("attack", src, "-o", tmp / "sd15-revived", "--device", device, "--quiet")
    wall = time.perf_counter() - t
    report = next(p for p in (tmp / "sd15-revived.report.json", tmp / "sd15-revived" / "revival_report.json") if p.exists())
    rep = json.loads(report.read_text())
    assert rep["attack"]["totals"]["kept"] > 0
    return (f"{n / 1e6:.0f}M params, {size / 2**30:.2f} GiB: attack {wall:.1f} s incl. load+write "
            f"(copy of the folder, the I/O floor: {floor:.1f} s; target <= 20 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--skip-full", action="store_true", help="skip the full-size UNet (CPU dry runs)")
    ap.add_argument("--results-dir", default=None, help="where the results file goes (default benchmarks/results/)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL  no CUDA device visible to torch")
        return 1
    dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="revival-gpu-check-") as d:
        tmp = Path(d)
        policy(args.device, args.dtype)
        for sub in ("sd", "tb", "audit", "full"):
            (tmp / sub).mkdir()
        tiny_sd(tmp / "sd", args.device, dtype)
        testbed(tmp / "tb", args.device, dtype)
        audit_check(tmp / "audit", args.device)
        if not args.skip_full:
            full_unet(tmp / "full", args.device)
    ok = all(r[1] for r in RESULTS)
    wall = time.perf_counter() - t0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import table, write_results

    path = write_results(f"gpu_check_{args.device.split(':')[0]}_{dtype}", {
        "page": "gpu", "title": f"GPU check ({args.device}, {dtype})", "passed": ok, "wall_s": wall,
        "tables": [table("checks", ["check", "pass", "seconds", "note"], [list(r) for r in RESULTS],
                         formats=["", "", ".1f", ""])]}, folder=args.results_dir)
    print(f"-> {path}")
    print(f"\n{'ALL PASS' if ok else 'SOME FAILED'}: {sum(r[1] for r in RESULTS)}/{len(RESULTS)} checks in "
          f"{time.perf_counter() - t0:.0f} s on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
