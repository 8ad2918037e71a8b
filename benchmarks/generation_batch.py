"""The testbed's generation by chunk size, side by side: seconds for the same images at each
most-images-a-chunk, and the largest pixel difference from drawing them all in one batch.

Every evaluation, audit and demo draws its images through `TestbedPipeline`, which cuts them
into equal chunks of at most `batch_size` (default `CPU_BATCH` on a CPU); this benchmark is how
that default was chosen. Prompts: held-out captions of every class, seeds from 1000.

    python benchmarks/generation_batch.py [--images 56 120] [--most 16 28 48 64 256] [--repeat 2] [--threads 1]

Writes benchmarks/results/generation_batch.json (benchmarks/results.py) unless --no-save. One
torch thread unless --threads; on a shared machine read the seconds with the load average beside them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_results  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[56, 120])
    ap.add_argument("--most", type=int, nargs="+", default=[16, 28, 48, 64, 256])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from revival.concepts.heldout import heldout_prompts
    from revival.model.loader import load_model
    from revival.testbed.pipeline import CPU_BATCH, TestbedPipeline, chunks

    pipe = load_model("testbed", device="cpu", dtype="fp32")
    load = os.getloadavg()[0]
    rows = []
    for n in args.images:
        every = heldout_prompts(pipe.classes, pipe.classes[0], n, n)
        picked = every[:: max(1, len(every) // n)][:n]
        prompts, seeds = [r.prompt for r in picked], [int(r.seed) for r in picked]
        pipe(prompts[:2], seeds[:2])                                   # warm
        one = pipe(prompts, seeds, batch_size=max(n, 1))
        for most in args.most:
            best, out = float("inf"), None
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = pipe(prompts, seeds, batch_size=most)
                best = min(best, time.perf_counter() - t)
            rows.append([n, most, len(chunks(n, most)), best, (out - one).abs().max().item()])
            print(f"{n} images, at most {most} a chunk ({len(chunks(n, most))} chunks): {best:.2f} s, "
                  f"max |diff| from one batch {rows[-1][-1]:.2e}", flush=True)
    base = {n: next(r[3] for r in rows if r[0] == n and r[1] == max(args.most)) for n in args.images}
    for r in rows:
        r.insert(4, base[r[0]] / r[3])
    if not args.no_save:
        path = write_results("generation_batch", {
            "title": "The testbed's generation by chunk size",
            "about": f"Best of {args.repeat} runs, {args.threads} torch thread(s), {pipe.default_steps} sampler steps with guidance; "
                     f"the default is at most {CPU_BATCH} images a chunk on a CPU. The speed-up is against the "
                     f"largest chunk size of the run (one batch). Load average at the start: {load:.2f}.",
            "load_average_start": load,
            "tables": [table("seconds by chunk size",
                             ["images", "at most a chunk", "chunks", "seconds", "speed-up vs the largest",
                              "max pixel difference from one batch"], rows,
                             formats=["", "", "", ".2f", ".2f", ".1e"])]})
        print(f"-> {path}")


if __name__ == "__main__":
    main()
