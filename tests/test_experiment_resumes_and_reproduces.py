"""`revival experiment` on the embedded testbed: the table's files, a second run that does
nothing, a run killed mid-cell that resumes to exactly the uninterrupted result, --reproduce,
and bad configs refused with one sentence and nothing written."""
from __future__ import annotations

import json

import pytest

from revival.cli import main
from revival.errors import RevivalError

from conftest import SMALL, files  # noqa: E402  (shared with test_data_parallel_equals_one_process.py)


@pytest.fixture
def first(small_experiment):
    """The folder of the session's run of SMALL: small.toml, and the experiment in a/."""
    return small_experiment


def test_table_files_and_shapes(first):
    a = first / "a"
    for name in ("results.json", "results.md", "results.csv", "results.png", "manifest.json"):
        assert (a / name).is_file()
    rows = json.loads((a / "results.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["concept"] == "sneaker" and rows[0]["task"] == "objects"
    assert set(rows[0]["erased"]) == set(rows[0]["preserved"]) == {"original", "unlearned", "revived"}
    assert set(rows[0]["sign_recovery"]) == {"revived"} and 0 <= rows[0]["sign_recovery"]["revived"]["kept"] <= 1
    assert "seconds" not in json.dumps(rows) and "timing" not in json.dumps(rows)
    assert rows[0]["images"] == {"erased": 1, "preserved": 9}
    csv_lines = (a / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("concept,task,erased original") and csv_lines[-1].startswith("mean,")
    man = json.loads((a / "manifest.json").read_text())
    assert man["config"]["seeds_per_class"] == 1 and man["config"]["concepts"][0]["skill_ratio"] == 0.05
    assert man["packages"]["torch"] and "unet/diffusion_pytorch_model.safetensors" in man["model_files"]
    assert man["runtime"] == {"device": "cpu", "dtype": "fp32".replace("fp", "float"), "processes": 1}
    # one folder per (concept, stage); the original's images are shared by every concept
    assert sorted(p.name for p in (a / "cells" / "sneaker").iterdir()) == ["original", "revived", "unlearned"]
    assert len(list((a / "original" / "images").glob("*.png"))) == 10
    assert len(list((a / "cells" / "sneaker" / "revived" / "images").glob("*.png"))) == 10


def test_second_run_does_nothing(first, capsys):
    before = files(first / "a")
    assert main(["experiment", str(first / "small.toml"), "--out", str(first / "a"), "--device", "cpu", "--quiet"]) == 0
    assert "0 of 3 cells computed" in capsys.readouterr().out
    assert files(first / "a") == before


def test_killed_run_resumes_to_the_same_result(first, monkeypatch):
    """Stop the run in the middle of the revived cell's images; start it again: every file
    (images, evaluations, cell records, results) equals the uninterrupted run's."""
    import sys

    import revival.evaluate  # noqa: F401

    G = sys.modules["revival.evaluate.generate"]

    calls = {"n": 0}
    real = G.png_bytes

    def dying(img):
        calls["n"] += 1
        if calls["n"] == 26:  # original 10 + unlearned 10 + 6 of revived
            raise KeyboardInterrupt
        return real(img)

    monkeypatch.setattr(G, "png_bytes", dying)
    args = ["experiment", str(first / "small.toml"), "--out", str(first / "b"), "--device", "cpu", "--quiet"]
    assert main(args) == 130
    assert not (first / "b" / "results.json").exists() and not (first / "b" / "cells" / "sneaker" / "revived" / "cell.json").exists()
    monkeypatch.setattr(G, "png_bytes", real)
    assert main(args) == 0
    assert files(first / "b") == files(first / "a")


def test_reproduce_from_the_manifest(first):
    assert main(["experiment", "--reproduce", str(first / "a" / "manifest.json"), "--out", str(first / "c"),
                 "--device", "cpu", "--quiet"]) == 0
    assert (first / "c" / "results.json").read_bytes() == (first / "a" / "results.json").read_bytes()
    man = json.loads((first / "a" / "manifest.json").read_text())
    man["model_files"]["unet/config.json"] = "0" * 64
    (first / "changed.json").write_text(json.dumps(man))
    with pytest.raises(RevivalError, match="differ from the manifest"):
        from revival.story.experiment import reproduce

        reproduce(first / "changed.json", first / "d", device="cpu", progress=False)
    assert not (first / "d").exists()


@pytest.mark.parametrize("edit, message", [
    ("colour = 'red'\n", "unknown key 'colour'"),
    ("[[concepts]]\nname = 'zebra'\n", "unknown concept 'zebra'"),
    ("[[concepts]]\nname = 'bag'\nclassifier = 'vgg'\n", "unknown classifier 'vgg'"),
    ("[[concepts]]\nname = 'bag'\nflavour = 1\n", "unknown key 'flavour' in concept 'bag'"),
    ("[attack]\nkeep = 0.5\nspeed = 2\n", "unknown key 'speed' in \\[attack\\]"),
    ("[defense]\nmethod = 'paint'\n", "method must be one of"),
])
def test_bad_configs_refused_nothing_written(tmp_path, capsys, edit, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(SMALL + edit)
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(message, err)
    assert not (tmp_path / "out").exists()


def test_bad_stage_model_folder_and_other_experiment(tmp_path, capsys, first):
    for text, message in ((SMALL.replace('"revived"]', '"revived", "retrained"]'), "unknown stage 'retrained'"),
                          (SMALL.replace('model = "testbed"', 'model = "no/such/sd"'), "does not exist"),
                          ("model = 'testbed'\n", "at least one concept"),
                          ("model = [", "not a valid TOML")):
        cfg = tmp_path / "c.toml"
        cfg.write_text(text)
        assert main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    # another config into an existing experiment's folder: refused, nothing touched
    cfg.write_text(SMALL.replace("seeds_per_class = 1", "seeds_per_class = 2"))
    before = files(first / "a")
    assert main(["experiment", str(cfg), "--out", str(first / "a"), "--device", "cpu", "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err and files(first / "a") == before


def test_defense_method_is_read(tmp_path):
    from revival.story.experiment import load_config

    cfg = tmp_path / "d.toml"
    cfg.write_text(SMALL + "[defense]\nmethod = 'resample'\n")
    assert load_config(cfg).defense == {"method": "resample"}


def test_shipped_config_names_every_testbed_concept():
    from revival.concepts.catalog import registry
    from revival.story.experiment import STAGES, load_config
    from revival.testbed import CLASSES

    cfg = load_config("testbed")
    assert [c.name for c in cfg.concepts] == CLASSES and cfg.stages == STAGES
    assert all(c.classifier == "testbed" and c.classes == tuple(CLASSES) for c in cfg.concepts)
    assert registry()[1]["testbed"] == CLASSES


def test_a_new_concept_on_a_local_sd_folder_needs_no_code(tmp_path):
    """A concept the registry does not know, defined in the config, on a tiny random SD folder."""
    from tiny_models import make_tiny_sd

    sd = make_tiny_sd(tmp_path / "m")
    (tmp_path / "c.toml").write_text(f"""
model = "{sd}"
seeds_per_class = 2
inference_steps = 3
unlearn_steps = 2
skill_ratio = 0.1
stages = ["original", "unlearned", "obfuscated"]
[[concepts]]
name = "bag"
classes = ["bag", "coat"]
classifier = "testbed"
unlearning = "prompts"
target_prompts = ["a bag in a kitchen", "a bag on a road"]
base_prompts = ["a kitchen", "a road"]
""")
    assert main(["experiment", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"]) == 0
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert rows[0]["images"] == {"erased": 2, "preserved": 2} and set(rows[0]["erased"]) == {"original", "unlearned", "obfuscated"}
    cells = [json.loads((tmp_path / "o" / "cells" / "bag" / s / "cell.json").read_text()) for s in ("original", "unlearned")]
    assert cells[0]["unet_sha256"] != cells[1]["unet_sha256"]  # the unlearned weights differ
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "unet/diffusion_pytorch_model.safetensors" in man["model_files"]
