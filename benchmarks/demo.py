"""`revival demo` as a new user runs it: wall time and what it reports.

Runs `revival --threads N demo -o TMP [args]` in a child process (the command `./run.sh demo`
runs, in the project's environment), times it whole (start-up included), then reads the
report it wrote: erased and preserved accuracy per stage with 95% intervals, sign recovery,
the skill ratio the least-damage search chose, the stages' timings.

    python benchmarks/demo.py                  # the default demo, one thread
    python benchmarks/demo.py --quick          # revival demo --quick
    python benchmarks/demo.py -- --controls    # anything after -- goes to `revival demo`

Writes benchmarks/results/demo[_quick].json (benchmarks/results.py) unless --no-save;
`python benchmarks/render_docs.py` renders it. On a shared machine the time grows with its load:
the load average is recorded beside it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import estimate, table, write_results  # noqa: E402

from revival.story.stages import LABELS as STAGE_LABELS  # noqa: E402 (the chain's labels, defined once)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the demo (default 1)")
    ap.add_argument("--quick", action="store_true", help="revival demo --quick")
    ap.add_argument("--no-save", action="store_true", help="print only; write no results file")
    ap.add_argument("demo_args", nargs="*", help="more `revival demo` arguments (after --)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="revival-bench-demo-") as tmp:
        out = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "revival.cli", "--threads", str(args.threads), "demo", "-o", str(out),
               *(["--quick"] if args.quick else []), *args.demo_args]
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        load1 = os.getloadavg()[0]
        if proc.returncode != 0:
            sys.exit(f"revival demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        report = json.loads((out / "report.json").read_text())
    print(proc.stdout[-4000:])
    acc, ci, n = report["accuracy"], report["intervals"], report["images"]
    rows = [[STAGE_LABELS.get(s, s), estimate(acc["erased"][s], ci["erased"][s]),
             estimate(acc["preserved"][s], ci["preserved"][s])] for s in acc["erased"]]
    for name, c in report.get("controls", {}).items():
        rows.append([f"control: {name.replace('_', ' ')}", estimate(c["erased"], c["erased_ci95"]),
                     estimate(c["preserved"], c["preserved_ci95"])])
    for name, h in (report.get("holds") or {}).items():   # stage 6: an erasure that holds
        rows.append([STAGE_LABELS.get(name, name), estimate(h["erased"], h["erased_ci95"]),
                     estimate(h["preserved"], h["preserved_ci95"])])
    rl = report.get("relearn") or {}
    relearn_rows = [[STAGE_LABELS.get(m, m), estimate(rl[m]["erased"], rl[m]["erased_ci95"])]
                    for m in ("never_learned", "unlearned", "robust") if m in rl]
    un = report.get("unlearn", {})
    sr = report["sign_recovery"]
    print(f"wall {wall:.0f} s (load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs)")
    if args.no_save:
        return 0
    shown = " ".join(["revival demo", *(["--quick"] if args.quick else []), *args.demo_args])
    path = write_results("demo" + ("_quick" if args.quick else ""), {
        "title": f"`{shown}` (the quick start)",
        "about": f"`{shown}` on the embedded testbed, concept `{report['concept']}`, timed whole in a child process "
                 f"with {args.threads} torch thread(s), start-up included: {wall:.0f} s, with the machine's load average "
                 f"{load0:.1f} at the start and {load1:.1f} at the end on {os.cpu_count()} CPUs (the time grows with "
                 f"the load). Held-out prompts and seeds, {n['erased']} images of the erased class and "
                 f"{n['preserved']} of the others per stage; 95% Wilson intervals.",
        "wall_s": wall, "load_average": [load0, load1], "concept": report["concept"], "images": n,
        "skill_ratio": un.get("skill_ratio"), "timings": report.get("timings", {}),
        "tables": [
            table("erased and preserved accuracy per stage", ["stage", "erased accuracy", "preserved accuracy"], rows,
                  formats=["", ".2f", ".2f"]),
            *([table(f"relearning: each model fine-tuned on {rl.get('images')} real images of the concept for "
                     f"{rl.get('steps')} steps ({rl.get('images_from')})", ["model", "erased accuracy after relearning"],
                     relearn_rows, formats=["", ".2f"])] if relearn_rows else []),
            table("the run", ["measure", "value"],
                  [["wall time, whole command (s)", wall],
                   ["skill ratio (least-damage search)", un.get("skill_ratio")],
                   ["sign recovery: completion, all pruned positions", sr.get("completion")],
                   ["sign recovery: kept positions", sr.get("kept")]], formats=["", ".3g"])]},
        argv=None if argv is None else [__file__, *argv])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
