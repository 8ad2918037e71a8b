"""torch CPU threads 1 vs 2 (or more), side by side, so the default thread count is chosen deliberately.

Times (best of --repeat):
* the attack's solver core (`revive_matrix` with the default AttackConfig) on SD-v1.5-shaped
  ff.net.2 matrices (synthetic low-rank plus heavy tail, ~2% ConceptPrune-like pruning), fp16;
* a UNet forward: the embedded testbed UNet when it is importable, else a small random
  diffusers UNet2DConditionModel, batch 2 (a classifier-free-guidance pair).

    python benchmarks/threads.py [--threads 1 2] [--repeat 3]

Writes benchmarks/results/threads.json (benchmarks/results.py) unless --no-save.

Caveat: on a machine shared with other jobs the 2-thread column suffers first; read it with
`uptime` beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def attack_cases():
    from attack_speed import synthetic_weight

    from revival.release.masks import synthetic_prune_mask

    g = torch.Generator().manual_seed(0)
    for out, inp in ((320, 1280), (640, 2560), (1280, 5120)):
        w = synthetic_weight(out, inp, g)
        yield f"attack core {out}x{inp}", w.masked_fill(synthetic_prune_mask(w, 0.025, seed=1), 0).half()


def unet_case():
    try:
        from revival.testbed import load_pipeline

        pipe = load_pipeline()
        unet = pipe.unet
        label = "testbed UNet forward (batch 2)"
    except Exception:  # the testbed is another module; fall back to a small random UNet
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                                    block_out_channels=(64, 128, 128), cross_attention_dim=128, attention_head_dim=8,
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
        label = "random SD-style UNet forward 32x32 (batch 2)"
    unet.eval()
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cfg.in_channels, size, size, generator=g)
    ctx = torch.randn(2, 16, cfg.cross_attention_dim, generator=g)
    t = torch.tensor([500, 500])

    def fwd():
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=ctx)

    return label, fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-save", action="store_true", help="print only; write no results file")
    args = ap.parse_args()
    from revival.attack.revive import AttackConfig, revive_matrix

    cfg = AttackConfig()
    cases = [(label, (lambda w=w, label=label: revive_matrix(w, cfg, name=label))) for label, w in attack_cases()]
    cases.append(unet_case())
    results = {}
    for label, fn in cases:
        fn()  # warm-up
        for n in args.threads:
            torch.set_num_threads(n)
            results[(label, n)] = best_of(fn, args.repeat)
    torch.set_num_threads(1)
    head = ["case"] + [f"{n} thread{'s' if n > 1 else ''} (s)" for n in args.threads]
    if len(args.threads) >= 2:
        head.append(f"speed-up {args.threads[-1]} vs {args.threads[0]}")
    rows = [head]
    for label, _ in cases:
        row = [label] + [f"{results[(label, n)]:.3f}" for n in args.threads]
        if len(args.threads) >= 2:
            row.append(f"{results[(label, args.threads[0])] / results[(label, args.threads[-1])]:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs; torch {torch.__version__}")
    if not args.no_save:
        from results import table, write_results

        cols = ["case"] + [f"{n} thread{'s' if n > 1 else ''} (s)" for n in args.threads]
        fmts = [""] + [".3f"] * len(args.threads)
        if len(args.threads) >= 2:
            cols.append(f"speed-up {args.threads[-1]} vs {args.threads[0]}")
            fmts.append(".2f")
        trows = []
        for label, _ in cases:
            r = [label] + [results[(label, n)] for n in args.threads]
            if len(args.threads) >= 2:
                r.append(results[(label, args.threads[0])] / results[(label, args.threads[-1])])
            trows.append(r)
        path = write_results("threads", {
            "title": "CPU threads",
            "about": "Seconds (best of the repeats) of the attack's solver core on SD-v1.5-shaped ff.net.2 "
                     "matrices and of a UNet forward, at each torch thread count. On a machine shared with "
                     "other jobs the column with more threads suffers first: read it with the load average.",
            "load_average_1min": load, "repeat": args.repeat, "threads": args.threads,
            "tables": [table("seconds per case", cols, trows, formats=fmts,
                             note=f"load average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs")],
        })
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
