"""The one writer (and reader) of benchmark results files.

Every benchmark that produces figures for the docs ends with

    from results import write_results          # benchmarks/ is the script's own folder
    write_results("sign_recovery", {"rows": [...], ...})

which writes `benchmarks/results/<name>.json` atomically:

    {"name": ..., "script": "benchmarks/x.py",
     "commit": "<git rev-parse HEAD>[+dirty]",      # +dirty: uncommitted changes under src/
     "command": "python benchmarks/x.py --flag ...",
     "date": "2026-12-05T08:30:00+00:00",          # UTC, ISO 8601
     "machine": {"platform", "python", "cpus", "torch", "threads", "gpu"},
     "data": {...}}                                 # the benchmark's own figures

`benchmarks/render_docs.py` turns these files into the docs' tables; nothing else writes or
reads them. What it renders from `data` (every key optional; other keys are kept as raw figures):

    "title":  the section's heading (default: the name)
    "page":   the docs page stem the section goes to (default "results" -> docs/results.md)
    "about":  one paragraph of prose above the tables
    "tables": [table(title, columns, rows, formats=[".3f", ".1%", ...], note=...), ...]
              raw values in rows (numbers, strings, None -> "n/a", [a, b] -> "[a, b]",
              {"value": v, "ci": [lo, hi]} -> "v [lo, hi]", {"hits": h, "n": n} -> "h/n"); the
              renderer formats numbers with each column's format spec (Python's format
              mini-language; "" = as is)

A results file without "tables" is rendered as a list of its scalar figures (key: value). Non-finite floats are written as null (JSON has no NaN); anything that is not
JSON data (numbers, strings, bools, None, lists/tuples, dicts with string keys; a one-element
tensor counts as its number) is refused with a TypeError before anything is written.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
FIELDS = ("name", "script", "commit", "command", "date", "machine", "data")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit_id() -> str:
    """`git rev-parse HEAD`, plus "+dirty" when src/ has uncommitted changes; "unknown" outside git."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if _git("status", "--porcelain", "--", "src") else "")


def machine() -> dict:
    """Where the figures were measured: platform, CPU count, Python, torch, torch threads, GPU name."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:  # a results file from a script that never needed torch
        info.update(torch=None, threads=None, gpu="no GPU")
    return info


def _script_and_command(argv) -> tuple[str, str]:
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("-")
    try:
        rel = script.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        rel = script.as_posix()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "REVIVAL_THREADS") if os.environ.get(k))
    cmd = shlex.join(["python", rel, *map(str, argv[1:])])
    return rel, (env + " " + cmd) if env else cmd


def _plain(obj, where: str = "data"):
    """JSON data only; non-finite floats -> None; tuples -> lists; a one-element tensor -> its number."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}; results files hold JSON objects.")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if hasattr(obj, "item") and getattr(obj, "numel", lambda: 0)() == 1:
        return _plain(obj.item(), where)
    raise TypeError(f"{where} is a {type(obj).__name__}, not JSON data; convert it before write_results.")


def table(title: str, columns, rows, *, formats=None, note: str | None = None) -> dict:
    """One table of a results file (see the module's docstring): raw values, formatted by the renderer."""
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    bad = [i for i, r in enumerate(rows) if len(r) != len(columns)]
    if bad:
        raise ValueError(f"table {title!r}: row {bad[0]} has {len(rows[bad[0]])} cells for {len(columns)} columns.")
    if formats is not None and len(formats) != len(columns):
        raise ValueError(f"table {title!r}: {len(formats)} formats for {len(columns)} columns.")
    out = {"title": str(title), "columns": columns, "rows": rows}
    if formats is not None:
        out["formats"] = [str(f) for f in formats]
    if note:
        out["note"] = str(note)
    return out


def estimate(value, ci) -> dict:
    """A table cell holding an estimate and its interval, rendered "value [lo, hi]"."""
    return {"value": value, "ci": list(ci)}


def write_results(name: str, data: dict, *, argv=None, folder=None) -> Path:
    """Write `<folder>/<name>.json` (folder: benchmarks/results/) atomically and return its path.

    `name`: lower-case letters, digits, '_' or '-' (the file's stem, one per benchmark setting).
    `data`: the benchmark's figures (a dict of JSON data). `argv`: the command line to record
    (default sys.argv; argv[0] is the script). Replaces an earlier results file of the same name:
    a results file is the latest measurement, and git keeps the history."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"results name must be lower-case letters, digits, '_' or '-', got {name!r}.")
    if not isinstance(data, dict):
        raise TypeError(f"results data must be a dict, got {type(data).__name__}.")
    script, command = _script_and_command(argv)
    record = {
        "name": name,
        "script": script,
        "commit": commit_id(),
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "data": _plain(data),
    }
    text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n"
    folder = Path(RESULTS_DIR if folder is None else folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_results(folder=None) -> dict[str, dict]:
    """Every results file of `folder` (default benchmarks/results/), by name, checked for the fields
    above (ValueError naming the file otherwise)."""
    folder = Path(RESULTS_DIR if folder is None else folder)
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}).") from None
        missing = [k for k in FIELDS if k not in rec] if isinstance(rec, dict) else list(FIELDS)
        if missing:
            raise ValueError(f"{path} is not a results file (missing {', '.join(missing)}).")
        if rec["name"] != path.stem:
            raise ValueError(f"{path} names itself {rec['name']!r}; a results file is named after its name.")
        found[rec["name"]] = rec
    return found
