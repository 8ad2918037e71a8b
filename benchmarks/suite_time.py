"""The test suite's wall time and its 15 slowest tests, so that the time budget is watched.

Runs the whole suite as CI does (`python -m pytest`, with the project's pytest settings: two
pytest-xdist workers, whole files to a worker) plus `--durations=15`, and records the wall time,
the outcome counts, the 15 slowest test phases (setup / call / teardown, seconds) and the load
average before and after: on a machine shared with other jobs every figure is inflated, so read
them beside the load.

    python benchmarks/suite_time.py                 # the suite as configured
    python benchmarks/suite_time.py -- -n 0         # extra pytest arguments after --: one process

Writes benchmarks/results/suite_time.json (benchmarks/results.py) unless --no-save; then
`python benchmarks/render_docs.py` puts it into docs/results.md. Exits with pytest's status.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import ROOT, table, write_results  # noqa: E402

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(setup|call|teardown)\s+(\S.*?)\s*$")
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def parse(output: str) -> tuple[list[list], dict[str, int]]:
    """([[test, phase, seconds], ...] of the durations report, {outcome: count} of the summary line)."""
    slowest, inside = [], False
    for line in output.splitlines():
        if "slowest" in line and "durations" in line:
            inside = True
            continue
        if inside:
            m = DURATION.match(line)
            if m:
                slowest.append([m.group(3), m.group(2), float(m.group(1))])
            elif line.strip() and not line.startswith("("):
                inside = False
    counts: dict[str, int] = {}
    summary = [l for l in output.splitlines() if re.search(r"\d+ (passed|failed)", l)]
    for n, kind in COUNT.findall(summary[-1] if summary else ""):
        counts["errors" if kind.startswith("error") else kind] = int(n)
    return slowest, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-save", action="store_true", help="print only; write no results file")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    cmd = [sys.executable, "-m", "pytest", "--durations=15", *args.pytest_args]
    load_start, t0 = load_average(), time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, load_end = time.perf_counter() - t0, load_average()
    output = run.stdout + run.stderr
    slowest, counts = parse(output)
    print("\n".join(output.splitlines()[-40:]))
    print(f"\nwall {wall:.1f} s, pytest exit {run.returncode}; load average (1 min) {load_start:.2f} at the start, "
          f"{load_end:.2f} at the end, on {os.cpu_count()} CPUs")
    if not slowest:
        print("suite_time: no durations report in pytest's output; nothing saved", file=sys.stderr)
        return run.returncode or 1
    if run.returncode != 0:
        print(f"suite_time: the suite did not pass ({counts}); the results record that", file=sys.stderr)
    if not args.no_save:
        outcome = ", ".join(f"{n} {k}" for k, n in counts.items())
        suite = table("the whole suite", ["wall (s)", "outcome", "pytest exit", "load average at the start",
                                          "load average at the end", "CPUs", "extra pytest arguments"],
                      [[wall, outcome, run.returncode, load_start, load_end, os.cpu_count(),
                        " ".join(args.pytest_args) or "none"]],
                      formats=[".0f", "", "", ".2f", ".2f", "", ""])
        slow = table("the 15 slowest test phases", ["test", "phase", "seconds"], slowest, formats=["", "", ".1f"],
                     note="Seconds of each phase on its worker; a module's or the session's shared fixtures count "
                          "in the setup of the first test that asks for them.")
        path = write_results("suite_time", {
            "title": "The test suite's time",
            "about": "`python -m pytest --durations=15` as CI runs it (docs/testing.md says where the time goes). "
                     "The machine's cores are shared with other jobs: read the seconds beside the load average.",
            "wall_s": wall, "counts": counts, "returncode": run.returncode,
            "load_average_start": load_start, "load_average_end": load_end,
            "tables": [suite, slow]}, argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
        print(f"wrote {path}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
