"""Data parallelism: `revival evaluate` and `revival unlearn` under torchrun with two CPU (gloo)
processes give exactly what one process gives -- the same image bytes, accuracies and masks --
and the evaluation records the number of processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revival.cli import main
from revival.unlearn.conceptprune import load_masks
from tiny_models import make_tiny_sd

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


def test_evaluate_two_processes_equal_one(tmp_path):
    args = ["evaluate", "--concept", "bag", "--seeds", "3", "--steps", "3", "--batch-size", "4",
            "--device", "cpu", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    torchrun(args + ["--out", "two"], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    names = sorted(p.name for p in (one / "images").glob("*.png"))
    assert len(names) == 30 and names == sorted(p.name for p in (two / "images").glob("*.png"))
    assert all((one / "images" / n).read_bytes() == (two / "images" / n).read_bytes() for n in names)
    r1, r2 = _report(one / "evaluation.json"), _report(two / "evaluation.json")
    assert r1["settings"].pop("processes") == 1 and r2["settings"].pop("processes") == 2
    assert r1 == r2
    assert not list(two.rglob("*.tmp"))  # each image written once, no temporaries left


def test_unlearn_statistics_all_reduced(tmp_path):
    """ConceptPrune's statistics summed per process, then all-reduced: the same masks."""
    args = ["unlearn", "--concept", "sneaker", "--steps", "2", "--inference-steps", "3",
            "--skill-ratio", "0.05", "--device", "cpu", "--quiet"]
    assert main(args + ["-o", str(tmp_path / "u1"), "--save-masks", str(tmp_path / "m1.safetensors")]) == 0
    torchrun(args + ["-o", "u2", "--save-masks", "m2.safetensors"], tmp_path)
    m1, m2 = load_masks(tmp_path / "m1.safetensors"), load_masks(tmp_path / "m2.safetensors")
    assert m1.keys() == m2.keys() and sum(int(m.sum()) for m in m1.values()) > 0
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    r2 = json.loads((tmp_path / "u2.unlearn.json").read_text())
    assert r2["config"]["processes"] == 2
