"""Nothing of the user's lost, nothing stale: existing outputs, reports against inputs, SIGTERM,
threads, umask."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import file_bytes

from revival.cli import main


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_attack_refuses_existing_output_unless_overwrite_and_keeps_other_files(tiny_unet, tmp_path, capsys):
    out = tmp_path / "revived"
    rc, _, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", out, "--quiet")
    assert rc == 0, err
    (out / "notes.txt").write_text("mine")
    first = file_bytes(out)
    rc, _, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", out, "--quiet", "--seed", "5")
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1
    assert file_bytes(out) == first
    rc, _, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", out, "--quiet", "--seed", "5", "--overwrite")
    assert rc == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    after = file_bytes(out)
    assert after["diffusion_pytorch_model.safetensors"] != first["diffusion_pytorch_model.safetensors"]
    # a --report that is an existing file of the user's is refused too
    (tmp_path / "keep.json").write_text("{}")
    rc, _, err = run(capsys, "defend", tiny_unet.pruned_dir, "-o", tmp_path / "d", "--report",
                     tmp_path / "keep.json", "--quiet")
    assert rc == 2 and "--overwrite" in err and not (tmp_path / "d").exists()
    assert (tmp_path / "keep.json").read_text() == "{}"


def test_unlearn_report_cannot_replace_a_file_of_the_model(tmp_path, capsys):
    from test_conceptprune_erasure import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "sd")
    index = (sd / "model_index.json").read_bytes()
    capsys.readouterr()  # building the model printed its own bars
    for flag in ([], ["--overwrite"]):  # inside the input: refused, --overwrite or not
        rc, _, err = run(capsys, "unlearn", "--model", sd, "--concept", "sneaker", "-o", tmp_path / "p",
                         "--report", sd / "model_index.json", "--quiet", *flag)
        assert rc == 2 and "inside the input" in err and err.count("\n") == 1 and "Traceback" not in err
        assert (sd / "model_index.json").read_bytes() == index and not (tmp_path / "p").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_thread_counts_are_one_sentence(tiny_unet, capsys, value):
    rc, _, err = run(capsys, "--threads", value, "inspect", tiny_unet.pruned_dir)
    assert rc == 2 and err.startswith("revival: error: --threads must be at least 1") and err.count("\n") == 1


def test_bad_thread_env_is_one_sentence(tiny_unet):
    env = dict(os.environ, REVIVAL_THREADS="two")
    proc = subprocess.run([sys.executable, "-m", "revival.cli", "inspect", str(tiny_unet.pruned_dir)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "REVIVAL_THREADS must be a positive whole number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_mid_write_leaves_nothing(tiny_unet, tmp_path):
    """SIGTERM while the attack writes: clean-up, one sentence, exit 143, no output, no temporary."""
    child = r"""
import sys, time
import revival.attack.revive
R = sys.modules["revival.attack.revive"]  # the package re-exports a function of the same name
real = R.revive
def slow(*a, **k):
    print("WRITING", flush=True)
    time.sleep(30)
    return real(*a, **k)
R.revive = slow
from revival.cli import main
sys.exit(main(sys.argv[1:]))
"""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", child, "attack", str(tiny_unet.pruned_dir), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the temporary output exists now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_outputs_follow_the_umask(tiny_unet, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        rc, _, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", tmp_path / "r.safetensors", "--quiet")
    finally:
        os.umask(old)
    assert rc == 0, err
    for p in tmp_path.rglob("*"):
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644), p
