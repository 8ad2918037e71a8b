"""Data-parallel evaluation: `revival evaluate` on the testbed with 1 process and with N processes
(torchrun, CPU gloo or one GPU each): identical outputs, and the wall-time ratio.

    python benchmarks/distributed.py                 # 2 processes vs 1, 20 seeds per class
    python benchmarks/distributed.py --procs 4 --seeds 50 --device cuda

Prints: whether every image file and the report (but for its "seconds" and "processes") are the
same bytes, the wall times (whole command incl. start-up, and the evaluation alone as recorded
in evaluation.json) and their ratio. Each process is pinned to --threads torch threads (default
1), so on an idle machine with at least N cores the ratio approaches N.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(cmd: list[str], threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS=str(threads))
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=20, help="images per class (10 classes)")
    ap.add_argument("--concept", default="sneaker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--results-dir", default=None, help="where the results file goes (default benchmarks/results/)")
    args = ap.parse_args()
    verb = ["--threads", str(args.threads), "evaluate", "--concept", args.concept, "--seeds", str(args.seeds),
            "--device", args.device, "--batch-size", str(args.batch_size), "--quiet"]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    with tempfile.TemporaryDirectory(prefix="revival-dist-") as d:
        one, many = Path(d) / "one", Path(d) / "many"
        w1 = run([sys.executable, "-m", "revival.cli", *verb, "--out", str(one)], args.threads)
        wn = run([torchrun, "--standalone", f"--nproc_per_node={args.procs}", "-m", "revival.cli", *verb,
                  "--out", str(many)], args.threads)
        names = sorted(p.name for p in (one / "images").glob("*.png"))
        same_images = names == sorted(p.name for p in (many / "images").glob("*.png")) and all(
            (one / "images" / n).read_bytes() == (many / "images" / n).read_bytes() for n in names)
        r1, rn = (json.loads((p / "evaluation.json").read_text()) for p in (one, many))
        s1, sn = r1.pop("seconds"), rn.pop("seconds")
        p1, pn = r1["settings"].pop("processes"), rn["settings"].pop("processes")
        same_report = r1 == rn
    print(f"testbed evaluation, {len(names)} images ({args.seeds} per class), device {args.device}, "
          f"{args.threads} thread(s) per process, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"identical images: {same_images}; identical report: {same_report} "
          f"(erased {r1['erased_accuracy']:.3f}, preserved {r1['preserved_accuracy']:.3f}); processes {p1} vs {pn}")
    print(f"whole command: 1 process {w1:.1f} s, {args.procs} processes {wn:.1f} s -> ratio {w1 / wn:.2f}x")
    print(f"evaluation alone (evaluation.json seconds): {s1:.1f} s vs {sn:.1f} s -> ratio {s1 / sn:.2f}x")
    from results import table, write_results

    load = os.getloadavg()[0]
    path = write_results(f"distributed_{args.device}", {
        "title": "Data-parallel evaluation: one process vs several",
        "about": (f"`revival evaluate` on the testbed, {len(names)} images ({args.seeds} a class), device {args.device}, "
                  f"{args.threads} torch thread(s) a process, once in one process and once under torchrun with "
                  f"{args.procs}; load average {load:.1f} on {os.cpu_count()} cores at the end."),
        "identical_images": same_images, "identical_report": same_report, "processes": [p1, pn],
        "tables": [table("wall time", ["what", "1 process s", f"{args.procs} processes s", "ratio"],
                         [["whole command", w1, wn, w1 / wn], ["evaluation alone", s1, sn, s1 / sn]],
                         formats=["", ".1f", ".1f", ".2f"],
                         note=f"identical images: {same_images}; identical report: {same_report}.")]},
        folder=args.results_dir)
    print(f"-> {path}")
    return 0 if same_images and same_report else 1


if __name__ == "__main__":
    sys.exit(main())
