"""Data parallelism: `revival unlearn` and `revival experiment` (generation, evaluation and the
unlearning statistics inside it) under torchrun with two CPU (gloo) processes give exactly what one
process gives -- the same masks, image bytes and accuracies -- and the reports record the number
of processes; processes launched with different settings are refused. (`revival evaluate` alone:
benchmarks/distributed.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from revival.cli import main
from revival.unlearn.conceptprune import load_masks

SRC = Path(__file__).resolve().parents[1] / "src"


def torchrun(args: list[str], cwd: Path, n: int = 2) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    assert exe.is_file(), "torchrun comes with torch"
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([str(exe), "--standalone", f"--nproc_per_node={n}", "-m", "revival.cli", *args],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _report(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.pop("seconds")
    return d


def test_unlearn_statistics_all_reduced(tmp_path):
    """ConceptPrune's statistics summed per process, then all-reduced: the same masks."""
    args = ["unlearn", "--concept", "sneaker", "--steps", "2", "--inference-steps", "3",
            "--skill-ratio", "0.05", "--device", "cpu", "--quiet"]
    assert main(args + ["-o", str(tmp_path / "u1"), "--save-masks", str(tmp_path / "m1.safetensors")]) == 0
    torchrun(args + ["-o", "u2", "--save-masks", "m2.safetensors"], tmp_path)
    m1, m2 = load_masks(tmp_path / "m1.safetensors"), load_masks(tmp_path / "m2.safetensors")
    assert m1.keys() == m2.keys() and sum(int(m.sum()) for m in m1.values()) > 0
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    r2 = json.loads((tmp_path / "u2.report.json").read_text())
    assert r2["config"]["processes"] == 2


AGREE = """
import os, sys
from revival.runtime.distributed import agree
from revival.errors import RevivalError
try:
    agree("config-" + os.environ["RANK"] if os.environ.get("DISAGREE") else "same", "the experiment config")
except RevivalError as exc:
    print(f"revival: error: {exc}", file=sys.stderr)
    sys.exit(2)
print("agreed")
"""


def test_processes_that_disagree_are_refused(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    exe = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [str(exe), "--standalone", "--nproc_per_node=2", str(script)]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.count("agreed") == 2
    bad = subprocess.run(cmd, env=dict(env, DISAGREE="1"), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert bad.stderr.count("revival: error: the 2 processes of this launch disagree on the experiment config") == 2


def test_experiment_under_torchrun_equals_one_process(small_experiment, tmp_path):
    """`revival experiment` runs unchanged under torchrun: the same cells, images and table (one
    process: the session's run of SMALL)."""
    from conftest import SMALL, files

    (tmp_path / "small.toml").write_text(SMALL)
    torchrun(["experiment", "small.toml", "--device", "cpu", "--quiet", "--out", "two"], tmp_path)
    one, two = files(small_experiment / "a"), files(tmp_path / "two")
    m1, m2 = (json.loads(x.pop("manifest.json")) for x in (one, two))
    assert m1["runtime"]["processes"] == 1 and m2["runtime"]["processes"] == 2
    assert m1["config"] == m2["config"] and m1["model_files"] == m2["model_files"]
    for x in (one, two):  # evaluation.json records the process count
        for k in [k for k in x if k.endswith("evaluation.json")]:
            d = json.loads(x[k])
            d["settings"].pop("processes")
            x[k] = json.dumps(d).encode()
    assert one == two
