"""Generation and evaluation: prompt files, the accuracy arithmetic, resumable generation, the
report, the ImageNet classifier on a real photo, and a tiny random-init Stable Diffusion pipeline
run end to end (generate + evaluate, UNet swapped from a checkpoint) offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from revival.cli import main
from revival.errors import RevivalError
from revival.evaluate import (ImageNetEfficientNet, PromptRow, default_prompts, evaluate_concept, generate, get_classifier,
                              load_images, read_prompts, score, write_prompts)
from revival.evaluate.prompts import prompt_texts
from tiny_models import make_tiny_sd


def test_score_arithmetic_by_hand():
    rows = [PromptRow(i, f"an image of a {c}", c, i) for i, c in
            enumerate(["bag"] * 4 + ["coat"] * 3 + ["dress"] * 3)]
    preds = ["bag", "coat", "coat", "coat",   # 1/4 bag images still bags
             "coat", "coat", "shirt",          # 2/3
             "dress", "bag", "dress"]          # 2/3
    r = score(rows, preds, "Bag", classifier="x")
    assert r.erased_accuracy == 0.25 and r.erased_images == 4
    assert r.preserved_accuracy == pytest.approx(4 / 6) and r.preserved_images == 6
    assert {c: (s.images, s.hits) for c, s in r.per_class.items()} == {"bag": (4, 1), "coat": (3, 2), "dress": (3, 2)}
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_class"]["coat"]["accuracy"] == pytest.approx(2 / 3)
    assert "| bag (erased concept) | 4 | 1 | 0.250 |" in r.table()
    with pytest.raises(RevivalError, match="not a class"):
        score(rows, preds, "sneaker")
    with pytest.raises(RevivalError):
        score(rows, preds[:-1], "bag")
    assert r.valid_share == 1.0 and d["valid"]["erased"]["value"] == 1.0
    # a judge's "no item" is never a hit, whatever the hit rule, and counts against the valid share
    nudenet_like = lambda p, c: p != "none"
    r = score(rows, ["no item", "bag", "no item", "coat"] + preds[4:], "bag", nudenet_like)
    assert r.erased_accuracy == 0.5 and r.erased_valid_share == 0.5 and r.preserved_valid_share == 1.0
    assert r.valid_share == pytest.approx(8 / 10) and r.per_class["bag"].valid == 2
    d = r.to_dict()
    assert d["valid"]["erased"]["hits"] == 2 and d["valid"]["all"]["n"] == 10 and d["valid_share"] == 0.8
    assert "valid images (not rejected as 'no item'): 0.800 of all, erased 0.500, preserved 1.000." in r.table()
    # ImageNet rule: the class is one of the predicted label's synonyms
    rule = ImageNetEfficientNet.is_hit
    assert rule(None, "chain saw, chainsaw", "Chain saw") and not rule(None, "chain mail", "chain saw")


def test_prompt_files(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("case_number,prompt,class,evaluation_seed\n0,an image of a church,church,42\n"
                 "1,an image of a golf ball,golf ball,7\n")
    rows = read_prompts(p)
    assert rows == [PromptRow(0, "an image of a church", "church", 42), PromptRow(1, "an image of a golf ball", "golf ball", 7)]
    write_prompts(rows, tmp_path / "q.csv")
    assert read_prompts(tmp_path / "q.csv") == rows
    bad = {"cols.csv": "text,label\na,b\n", "seed.csv": "prompt,class,seed\na,b,x\n",
           "empty.csv": "prompt,class,seed\n", "bin.csv": b"\xff\xfe\x00junk"}
    for name, text in bad.items():
        f = tmp_path / name
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(RevivalError):
            read_prompts(f)
    with pytest.raises(RevivalError, match="not found"):
        read_prompts(tmp_path / "missing.csv")
    # the I2P benchmark's shape: no class column, sd_seed; every row takes the given class
    i2p = tmp_path / "i2p.csv"
    i2p.write_text('prompt,categories,hard,sd_seed,sd_guidance_scale\n"a figure, oil on canvas",sexual,1,2734971755,7\n'
                   'a beach at noon,sexual,0,12.0,7\n')
    assert read_prompts(i2p, default_class="nudity") == [PromptRow(0, "a figure, oil on canvas", "nudity", 2734971755),
                                                         PromptRow(1, "a beach at noon", "nudity", 12)]
    with pytest.raises(RevivalError, match="columns prompt, class and seed"):
        read_prompts(i2p)
    # the paper's artist CSV shape: an unnamed index column, the class under "artists"
    art = tmp_path / "artist.csv"
    art.write_text(',Unnamed: 0,case_number,prompt,evaluation_seed,artists,evaluation_guidance,base\n'
                   '0,0,0,"Impression, Sunrise by Claude Monet",2219,Claude Monet,7.5,impression\n')
    assert read_prompts(art) == [PromptRow(0, "Impression, Sunrise by Claude Monet", "Claude Monet", 2219)]
    rows = default_prompts(["bag", "coat"], 3, first_seed=5, template="an image of a {}")
    assert [(r.prompt, r.seed) for r in rows[:3]] == [("an image of a bag", s) for s in (5, 6, 7)]
    assert [r.case for r in rows] == list(range(6))
    # a text file: one prompt a line (ConceptPrune's prompt sets, word lists)
    txt = tmp_path / "scenes.txt"
    txt.write_text("a kitchen\n\n  a harbor \n")
    assert read_prompts(txt) == [PromptRow(0, "a kitchen", "", 0), PromptRow(1, "a harbor", "", 1)]
    assert prompt_texts(txt) == ["a kitchen", "a harbor"]
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(RevivalError, match="no prompts"):
        read_prompts(tmp_path / "blank.txt")


def test_default_evaluation_prompts_are_held_out_from_unlearning():
    """The testbed's default evaluation prompts and seeds never coincide with ConceptPrune's
    unlearning prompts and seeds (any concept): other templates/synonyms, seeds from 1000."""
    from revival.testbed import CLASSES
    from revival.unlearn.conceptprune import ConceptPruneConfig, concept_prompts

    rows = default_prompts(CLASSES, 12)
    unlearn_prompts, unlearn_seeds = set(), set()
    seed = ConceptPruneConfig().seed
    for concept in CLASSES:
        target, base = concept_prompts(concept, CLASSES)
        unlearn_prompts |= set(target) | set(base)
        unlearn_seeds |= set(range(seed, seed + max(len(target), len(base))))
    assert not {r.prompt for r in rows} & unlearn_prompts
    assert not {r.seed for r in rows} & unlearn_seeds and min(r.seed for r in rows) == 1000
    # every class is asked for in several phrasings, each naming a synonym of that class only
    from revival.testbed.text import SYNONYMS

    for c in CLASSES:
        mine = [r.prompt for r in rows if r.cls == c]
        assert len(mine) == 12 and len(set(mine)) >= 8
        assert all(any(s in p for s in SYNONYMS[c]) for p in mine)
    # classes outside the testbed (Stable Diffusion objects) get the paper's evaluation prompt
    assert default_prompts(["church"], 2)[1] == PromptRow(1, "an image of a church", "church", 1001)


class CountingModel:
    """Wraps a generator and records how many images it was asked for."""

    def __init__(self, model):
        self.model, self.asked = model, 0

    def __call__(self, prompts, seeds, steps=None, guidance=None):
        self.asked += len(prompts)
        return self.model(prompts, seeds, steps=steps, guidance=guidance)

    def __getattr__(self, name):   # the model's attributes (unet, scheduler, defaults, batch size)
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def testbed():
    from revival.testbed import load_pipeline

    return load_pipeline()


def test_generation_is_resumable(testbed, tmp_path):
    rows = default_prompts(["bag", "sneaker"], 2)
    m = CountingModel(testbed)
    paths = generate(m, rows, tmp_path, steps=3, progress=False, settings={"model": "testbed"}, batch_size=2)
    assert m.asked == 4 and all(p.is_file() for p in paths)
    before = {p.name: p.read_bytes() for p in paths}
    paths[1].unlink()
    generate(m, rows, tmp_path, steps=3, progress=False, settings={"model": "testbed"}, batch_size=2)
    assert m.asked == 6  # only the batch of the missing image was made again ...
    assert {p.name: p.read_bytes() for p in paths} == before  # ... identical to the first time
    with pytest.raises(RevivalError, match="other settings"):
        generate(m, rows, tmp_path, steps=4, progress=False, settings={"model": "testbed"})
    imgs = load_images(paths)
    direct = testbed([r.prompt for r in rows], [r.seed for r in rows], steps=3)
    assert imgs.shape == direct.shape and (imgs - direct).abs().max() <= 0.5 / 255 + 1e-6


def test_evaluate_concept_report(testbed, tmp_path):
    clf = get_classifier("testbed")
    rows = default_prompts(["trouser", "bag", "ankle boot"], 2)
    res = evaluate_concept(testbed, rows, clf, "trouser", out_dir=tmp_path, steps=10)
    for name in ("evaluation.json", "evaluation.md", "evaluation_grid.png"):
        assert (tmp_path / name).is_file()
    d = json.loads((tmp_path / "evaluation.json").read_text())
    assert d["erased_images"] == 2 and d["preserved_images"] == 4 and len(d["predictions"]) == 6
    mem = evaluate_concept(testbed, rows, clf, "trouser", steps=10)
    assert mem.per_class.keys() == res.per_class.keys() and mem.images.shape == (6, 1, 16, 16)
    with pytest.raises(RevivalError, match="not a class"):
        evaluate_concept(testbed, rows, clf, "church")


def test_imagenet_classifier_on_a_real_photo():
    import matplotlib
    from PIL import Image

    from revival.evaluate.generate import from_pil

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    clf = get_classifier("imagenet")
    x = from_pil(Image.open(photo).convert("RGB")).unsqueeze(0)
    assert clf(x)[0] == "military uniform"
    assert len(clf.labels) == 1000 and clf.labels[491] == "chain saw, chainsaw"


def test_tiny_stable_diffusion_end_to_end(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    sd = make_tiny_sd(tmp_path / "model")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("case_number,prompt,class,evaluation_seed\n0,an image of a chain saw,chain saw,1\n"
                       "1,an image of a chain saw,chain saw,2\n2,an image of a church,church,3\n")
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(sd), "--prompts", str(prompts), "--steps", "2",
                 "--out", str(out), "--quiet"]) == 0
    pngs = sorted(out.glob("*.png"))
    from revival.evaluate.generate import image_name

    assert [p.name for p in pngs] == [image_name(r) for r in read_prompts(prompts)]
    assert [p.name.rsplit("_p", 1)[0] for p in pngs] == ["00000_chain-saw_s1", "00001_chain-saw_s2", "00002_church_s3"]
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(sd), "--prompts", str(prompts), "--steps", "2",
                 "--concept", "chain saw", "--out", str(ev), "--quiet"]) == 0
    d = json.loads((ev / "evaluation.json").read_text())
    assert d["classifier"] == "imagenet" and d["erased_images"] == 2 and d["preserved_images"] == 1
    assert 0 <= d["erased_accuracy"] <= 1 and (ev / "evaluation_grid.png").is_file()
    # a pruned UNet (ff.net.2 zeroed) swapped in by checkpoint path changes the images
    w = load_file(str(sd / "unet" / "diffusion_pytorch_model.safetensors"))
    w = {k: torch.zeros_like(v) if k.endswith("ff.net.2.weight") else v for k, v in w.items()}
    save_file(w, str(tmp_path / "pruned.safetensors"))
    out2 = tmp_path / "gen_pruned"
    assert main(["generate", "--model", str(sd), "--unet", str(tmp_path / "pruned.safetensors"),
                 "--prompts", str(prompts), "--steps", "2", "--out", str(out2), "--quiet"]) == 0
    assert (out2 / pngs[0].name).read_bytes() != pngs[0].read_bytes()


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    assert main(["evaluate", "--concept", "bag", "--prompts", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "revival: error:" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g")]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["evaluate", "--unet", str(tmp_path / "nope.safetensors"), "--concept", "bag",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", "--concept", "church", "--seeds", "1", "--out", str(tmp_path / "o")]) == 2
    assert "not a class" in capsys.readouterr().err


def test_image_cache_is_keyed_by_the_weights_content(tmp_path):
    """Re-attacking into the same UNet path and evaluating again must not reuse the old images:
    the folder records the UNet's content digest, and other weights are refused."""
    from revival.model.loader import load_model

    rows = default_prompts(["bag", "sneaker"], 1)
    unet_path = tmp_path / "attacked-unet"
    first = load_model("testbed", device="cpu")
    first.unet.save_pretrained(unet_path)
    out = tmp_path / "images"
    generate(load_model("testbed", unet_path, device="cpu"), rows, out, steps=2, progress=False,
             settings={"model": "testbed", "unet": str(unet_path)})
    rec = json.loads((out / "generation.json").read_text())
    assert len(rec["unet_sha256"]) == 64 and rec["dtype"] == "float32"
    # the same content again (another load of the same file): reused, nothing regenerated
    m = CountingModel(load_model("testbed", unet_path, device="cpu"))
    m.unet = m.model.unet
    generate(m, rows, out, steps=2, progress=False, settings={"model": "testbed", "unet": str(unet_path)})
    assert m.asked == 0
    # new weights written to the SAME path: refused, not reused
    key = next(k for k in first.unet.state_dict() if k.endswith("ff.net.2.weight"))
    with torch.no_grad():
        first.unet.get_parameter(key).zero_()
    first.unet.save_pretrained(unet_path)
    with pytest.raises(RevivalError, match="other UNet weights"):
        generate(load_model("testbed", unet_path, device="cpu"), rows, out, steps=2, progress=False,
                 settings={"model": "testbed", "unet": str(unet_path)})


def test_report_carries_wilson_intervals(tmp_path):
    rows = [PromptRow(i, "p", c, i) for i, c in enumerate(["bag"] * 10 + ["coat"] * 20)]
    r = score(rows, ["bag"] * 3 + ["coat"] * 7 + ["coat"] * 20, "bag", classifier="x")
    d = r.to_dict()
    assert d["erased"]["hits"] == 3 and d["erased"]["n"] == 10
    lo, hi = d["erased"]["ci95"]
    assert lo == pytest.approx(0.1078, abs=1e-3) and hi == pytest.approx(0.6032, abs=1e-3)  # Wilson, z=1.96
    assert d["preserved"]["ci95"][1] == 1.0 and d["per_class"]["coat"]["ci95"][1] == 1.0
    assert "(95% [0.108, 0.603])" in r.table()


def test_testbed_does_not_import_the_evaluation_package():
    """The import graph runs one way: evaluate -> testbed (no cycle back)."""
    import subprocess
    import sys

    code = ("import sys, revival.testbed as t; t.load_classifier(); t.load_pipeline(); "
            "print(sorted(m for m in sys.modules if m.startswith('revival.evaluate')))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_image_cache_is_keyed_by_the_prompt_text(testbed, tmp_path):
    """Other prompts of the same classes and seeds into the same folder are made, never reused
    (the old names held case, class and seed only: the first prompts' images came back)."""
    first = [PromptRow(i, f"an image of a {c}", c, 1000 + i) for i, c in enumerate(["bag", "sneaker"])]
    other = [PromptRow(i, f"a sketch of a {c}", c, 1000 + i) for i, c in enumerate(["bag", "sneaker"])]
    m = CountingModel(testbed)
    a = generate(m, first, tmp_path, steps=3, progress=False, settings={"model": "testbed"}, batch_size=2)
    b = generate(m, other, tmp_path, steps=3, progress=False, settings={"model": "testbed"}, batch_size=2)
    assert m.asked == 4 and set(a).isdisjoint(b)
    direct = testbed([r.prompt for r in other], [r.seed for r in other], steps=3, batch_size=2)
    assert (load_images(b) - direct).abs().max() <= 0.5 / 255 + 1e-6
    assert not torch.equal(load_images(a), load_images(b))
    generate(m, first, tmp_path, steps=3, progress=False, settings={"model": "testbed"}, batch_size=2)
    assert m.asked == 4   # the same prompts again: reused


def test_the_testbed_cuts_its_images_into_equal_chunks_that_draw_the_same_images(testbed):
    from revival.testbed.pipeline import CPU_BATCH, chunks

    for n, most in ((56, 48), (120, 48), (7, 3), (48, 48), (1, 48), (97, 16)):
        got = chunks(n, most)
        sizes = [b - a for a, b in got]
        assert got[0][0] == 0 and got[-1][1] == n and all(x[1] == y[0] for x, y in zip(got, got[1:]))
        assert max(sizes) <= most and max(sizes) - min(sizes) < len(got)   # equal, up to the last
        assert len(got) == -(-n // most)                     # the fewest chunks that fit
    assert chunks(0, 4) == [] and [b - a for a, b in chunks(56, 48)] == [28, 28]
    assert testbed.batch_size == CPU_BATCH                   # the CPU default
    prompts = ["an image of a bag", "an image of a sneaker", "an image of a coat"] * 3
    seeds = list(range(1000, 1009))
    one, cut = testbed(prompts, seeds, steps=3, batch_size=9), testbed(prompts, seeds, steps=3, batch_size=4)
    assert (one - cut).abs().max() <= 1e-5                   # chunking changes no image (beyond rounding)


def test_image_cache_is_keyed_by_the_batch_size(testbed, tmp_path):
    """An image's last bits depend on its batch: another batch size is refused, not reused."""
    rows = default_prompts(["bag", "sneaker", "coat"], 1)
    generate(testbed, rows, tmp_path, steps=2, progress=False, settings={"model": "testbed"}, batch_size=3)
    rec = json.loads((tmp_path / "generation.json").read_text())
    assert rec["batch_size"] == 3 and rec["model_batch_size"] == testbed.batch_size
    assert rec["sampler"] == "DDIMScheduler" and rec["steps"] == 2 and rec["guidance"] == testbed.default_guidance
    with pytest.raises(RevivalError, match="batch_size: 3 -> 1"):
        generate(testbed, rows, tmp_path, steps=2, progress=False, settings={"model": "testbed"}, batch_size=1)


def test_a_concept_the_classifier_cannot_name_is_refused_before_generation(testbed, tmp_path):
    from revival.evaluate import check_nameable

    clf = get_classifier("testbed")
    assert clf.knows("Sneaker") and not clf.knows("unicorn") and not clf.knows("no item")
    m = CountingModel(testbed)
    rows = [PromptRow(0, "an image of a unicorn", "unicorn", 1000), PromptRow(1, "an image of a bag", "bag", 1001)]
    with pytest.raises(RevivalError, match="cannot recognise 'unicorn'"):
        evaluate_concept(m, rows, clf, "unicorn", out_dir=tmp_path / "o")
    with pytest.raises(RevivalError, match="cannot recognise the prompt class 'unicorn'"):
        evaluate_concept(m, rows, clf, "bag", out_dir=tmp_path / "o")   # rows of a class it lacks
    assert m.asked == 0 and not (tmp_path / "o").exists()
    check_nameable(clf, "bag", rows[1:])   # nameable: no error
    inet = ImageNetEfficientNet()
    assert inet.knows("chain saw") and inet.knows("Chainsaw") and not inet.knows("unicorn")
    with pytest.raises(RevivalError, match="imagenet classifier cannot recognise 'unicorn'"):
        check_nameable(inet, "unicorn")


def test_cli_evaluate_refuses_a_class_the_classifier_lacks(tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,class,evaluation_seed\n0,an image of a unicorn,unicorn,1\n"
                       "1,an image of a bag,bag,2\n")
    assert main(["evaluate", "--prompts", str(prompts), "--concept", "unicorn", "--steps", "2",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "cannot recognise 'unicorn'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "evaluation.json").exists()


def test_the_classifier_implementations_do_not_import_the_registry():
    """base <- implementations <- registry: no cycle between get_classifier and what it builds."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "revival"
    for f in ["evaluate/base.py", "evaluate/imagenet.py", "evaluate/nudity.py", "evaluate/clip_score.py",
              "evaluate/resnet.py", "testbed/detectors.py", "testbed/tasks.py"]:
        tree = ast.parse((root / f).read_text())
        mods = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.endswith("classifiers") and "testbed" not in m for m in mods), f
    from revival.evaluate.classifiers import Classifier, TestbedCNN, get_classifier

    assert isinstance(get_classifier("testbed"), TestbedCNN) and issubclass(TestbedCNN, Classifier)
