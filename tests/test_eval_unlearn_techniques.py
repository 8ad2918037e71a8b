"""revival's stages as eval-unlearn techniques (revival.eval_unlearn): discovery through
eval-unlearn's own entry-point loader, a run of its runner on the testbed with revival's offline
metric, the revived-vs-release figures equal to `revival demo`'s on the same held-out prompts and
seeds, the example configs, the cache, and bad input.

Every stage is built once for the module (a shared cache folder) with the example configs'
settings (the demo's defaults) but fewer images (`FEW`: the least-damage search's validation
images, the images that pick the strongest attacker and the images judged; the demo gets the same
numbers); the demo's figures come from `revival.story.demo.run_demo` itself, with an evaluator that
judges the concept and one preserved class only (the erased figure is over the same rows as the
full demo's)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

# eval-unlearn is a dev dependency (pyproject): a missing one fails these imports, it is not skipped
from eval_unlearn.registry import get_metric, get_technique  # noqa: E402
from eval_unlearn.registry.entrypoints import load_entrypoints  # noqa: E402
from eval_unlearn.registry.local import _METRICS, _TECHNIQUES  # noqa: E402
from eval_unlearn.runners import SingleBenchmarkRunner  # noqa: E402

from revival.errors import RevivalError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "eval-unlearn"
TECHNIQUES = {"revival_conceptprune": "ConceptPruneRelease", "revival_revived": "RevivedRelease",
              "revival_defended": "DefendedRelease", "revival_defended_attack": "DefendedAttackedRelease"}
# fewer images than the shipped examples' (60 search, 20 judged), the same on both sides: the demo's
# search_seeds / seeds_per_class are the techniques' search_images / select_images and the metric's images
IMAGES, SEARCH = 10, 20
FEW = {"search_images": SEARCH, "select_images": IMAGES}
STAGE_OF = {"revival_conceptprune": "unlearned", "revival_revived": "revived", "revival_defended": "obfuscated",
            "revival_defended_attack": "obfuscated_revived"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-unlearn-cache")


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_plugins_discovered_through_eval_unlearns_entry_points():
    eps = {ep.name: ep.value for ep in entry_points(group="eval_unlearn.techniques") if ep.name.startswith("revival")}
    assert eps == {n: f"revival.eval_unlearn.techniques:{c}" for n, c in TECHNIQUES.items()}
    # forget what importing the modules registered: only the entry points may bring them back
    for name in TECHNIQUES:
        _TECHNIQUES.pop(name, None)
    _METRICS.pop("revival_concept_accuracy", None)
    load_entrypoints()
    from revival.eval_unlearn import techniques
    from revival.eval_unlearn.metric import ConceptAccuracyMetric

    for name, cls in TECHNIQUES.items():
        assert get_technique(name) is getattr(techniques, cls)
        assert get_technique(name).stage in ("unlearned", "revived", "obfuscated", "obfuscated_revived")
    assert get_metric("revival_concept_accuracy") is ConceptAccuracyMetric


def test_eval_unlearn_plugins_lists_the_four_techniques():
    exe = Path(sys.executable).with_name("eval-unlearn")
    out = subprocess.run([str(exe), "plugins"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    listed = out.stdout.split("Metrics:")[0].split()
    assert [t for t in listed if t.startswith("revival_")] == sorted(TECHNIQUES)
    assert "revival_concept_accuracy" in out.stdout.split("Metrics:")[1]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """`revival demo`'s report for the example's concept with the demo's defaults but `FEW` images,
    judged on the concept and one preserved class (IMAGES held-out images each, seeds from 1000)."""
    from revival.story.demo import DemoConfig, run_demo, testbed_evaluator

    def evaluator(pipeline, classes, concept, seeds_per_class, config, first_seed=None):
        keep = [concept] if len(classes) == 1 else [concept, "sandal"]
        return testbed_evaluator(pipeline, keep, concept, seeds_per_class, config, first_seed)

    cfg = DemoConfig(concept="sneaker", preserved_concept="sandal", utility=False, grid_seeds=2,
                     seeds_per_class=IMAGES, search_seeds=SEARCH, holds=False)   # stage 6 is no technique
    return run_demo(cfg, tmp_path_factory.mktemp("demo"), progress=False, evaluator=evaluator)


def _run(technique: str, cache, out, example: str | None = None) -> dict:
    cfg = _example(example or f"testbed-{technique.removeprefix('revival_').replace('_', '-')}.yaml")
    assert cfg["technique"]["name"] == technique
    runner = SingleBenchmarkRunner(technique_name=technique, metric_name=cfg["metric"]["name"],
                                   technique_config={**cfg["technique"]["config"], **FEW, "cache_dir": str(cache)},
                                   metric_config={**cfg["metric"]["config"], "images": IMAGES}, output_dir=str(out))
    return runner.run()


def test_runner_on_the_testbed_equals_the_demo(cache, tmp_path, demo_report):
    """Each stage's erased accuracy through eval-unlearn's runner (the example configs) lies in the
    demo's interval for that stage, same prompts and seeds; so does the revived-vs-release gap."""
    got = {}
    for technique, stage in STAGE_OF.items():
        report = _run(technique, cache, tmp_path)
        res = report["metric_result"]
        assert report["technique_name"] == technique and report["erase_concept"] == "sneaker"
        assert res["details"]["n"] == IMAGES and res["details"]["seeds"] == list(range(1000, 1000 + IMAGES))
        images = list(tmp_path.glob(f"{technique}_revival_concept_accuracy_*/images/*.png"))
        assert len(images) == IMAGES
        lo, hi = demo_report["intervals"]["erased"][stage]
        demo = demo_report["accuracy"]["erased"][stage]
        assert lo <= res["value"] <= hi, (technique, res["value"], demo, (lo, hi))
        # the same images up to 8-bit quantisation and batch rounding: at most one image judged otherwise
        assert abs(res["value"] - demo) <= 1 / IMAGES + 1e-9, (technique, res["value"], demo)
        got[technique] = res
    gap = got["revival_revived"]["value"] - got["revival_conceptprune"]["value"]
    acc = demo_report["accuracy"]["erased"]
    demo_gap = acc["revived"] - acc["unlearned"]
    assert gap >= 0.5 and abs(gap - demo_gap) <= 0.15, (gap, demo_gap)   # the paper's result, measured both ways
    print("\n" + "\n".join(f"{t:<24} eval-unlearn {got[t]['value']:.2f} {got[t]['details']['ci95']}   demo {s:<18} "
                           f"{acc[s]:.2f} {demo_report['intervals']['erased'][s]}" for t, s in STAGE_OF.items())
          + f"\nrevived - release: eval-unlearn {gap:+.2f}, demo {demo_gap:+.2f}")


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_each_testbed_example_generates_through_the_registry(technique, cache, demo_report):
    from revival.evaluate.generate import from_pil
    from revival.evaluate.prompts import default_prompts

    cfg = _example(f"testbed-{technique.removeprefix('revival_').replace('_', '-')}.yaml")
    load_entrypoints()
    tech = get_technique(cfg["technique"]["name"])(**cfg["technique"]["config"], **FEW, cache_dir=str(cache))
    rows = default_prompts(["sneaker"], 3, 1000)
    prompts = [r.prompt for r in rows]
    first, again, seeded = tech.generate(prompts), tech.generate(prompts), tech.generate(prompts, seed=5)
    assert [im.mode for im in first] == ["RGB"] * 3 and first[0].size == (tech.pipeline.resolution,) * 2
    # image i of a call has seed first_seed + i (or the runner's seed + i): the demo's held-out seeds
    for images, seeds in ((first, [r.seed for r in rows]), (again, [1000, 1001, 1002]), (seeded, [5, 6, 7])):
        direct = tech.pipeline(prompts, seeds)
        for im, ref in zip(images, direct):
            assert (from_pil(im.convert("L")) - ref).abs().max() <= 0.5 / 255 + 1e-6
    assert (from_pil(seeded[0]) - from_pil(first[0])).abs().max() > 0.1
    # the stage is the demo's: its pruned layers, its skill ratio, its strongest attacker
    info = tech.info
    assert info["skill_ratio"] == demo_report["unlearn"]["skill_ratio"]
    if technique == "revival_defended_attack":
        from revival.attack.attackers import ATTACKERS

        assert set(info["attackers"]) == set(ATTACKERS)     # every attacker of the ladder ran
        assert info["strongest"] in (*ATTACKERS, None)


def test_stages_are_cached_by_content(cache):
    from revival.eval_unlearn.config import TechniqueConfig
    from revival.eval_unlearn.releases import build

    base = {"erase_concept": "sneaker", **FEW, "cache_dir": str(cache)}
    first = build("revived", TechniqueConfig.from_dict(base))       # built by the tests above, or now
    again = build("revived", TechniqueConfig.from_dict(base))
    assert again.info["cached"] and again.info["key"] == first.info["key"]
    a, b = first.pipeline.unet.state_dict(), again.pipeline.unet.state_dict()
    assert all(bool((a[k] == b[k]).all()) for k in a)
    # another setting is another release: another key, another file; no temporary file is left
    other = build("revived", TechniqueConfig.from_dict({**base, "keep": 0.5}))
    assert other.info["key"] != first.info["key"] and not other.info["cached"]
    assert other.info["cache"] != first.info["cache"] and Path(other.info["cache"]).is_file()
    assert all(p.suffix == ".safetensors" for p in Path(cache).iterdir())
    # a damaged cache file is rebuilt, not trusted
    Path(other.info["cache"]).write_bytes(b"not safetensors")
    rebuilt = build("revived", TechniqueConfig.from_dict({**base, "keep": 0.5}))
    assert not rebuilt.info["cached"] and rebuilt.info["key"] == other.info["key"]


@pytest.mark.parametrize("config, msg", [
    ({"erase_concept": "zebra"}, "unknown concept 'zebra'; the testbed knows: t-shirt"),
    ({"erase_concept": "church", "model": "/nonexistent/sd-v1-5"}, "model folder not found: /nonexistent/sd-v1-5"),
    ({"erase_concept": "sneaker", "concpet": "x"}, "unknown technique setting 'concpet'"),
    ({}, "needs erase_concept"),
    ({"erase_concept": "sneaker", "defense": "prayer"}, "defense must be one of resample"),
    ({"erase_concept": "sneaker", "skill_ratio": 0}, "skill_ratio must be a number in (0.0, 1.0]"),
])
def test_bad_config_one_sentence_before_any_work(config, msg, tmp_path):
    from revival.eval_unlearn.techniques import RevivedRelease

    with pytest.raises(RevivalError) as exc:
        RevivedRelease(**config, cache_dir=str(tmp_path / "c"))
    assert msg in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("config, msg", [
    ({"concept": "zebra"}, "unknown concept 'zebra'; the testbed knows"),
    ({"concept": "sneakerz", "classifier": "imagenet"}, "the imagenet classifier has no class 'sneakerz'"),
    ({"concept": "sneaker", "images": 0}, "images must be an integer >= 1"),
    ({"concept": "sneaker", "batch": 4}, "unknown metric setting 'batch'"),
    ({}, "needs concept"),
])
def test_bad_metric_config_one_sentence(config, msg):
    from revival.eval_unlearn.metric import ConceptAccuracyMetric

    with pytest.raises(RevivalError) as exc:
        ConceptAccuracyMetric(**config)
    assert msg in str(exc.value) and "\n" not in str(exc.value)


def test_bad_config_under_eval_unlearn_run_is_one_sentence(tmp_path):
    cfg = _example("testbed-revived.yaml")
    cfg["technique"]["config"]["erase_concept"] = "zebra"
    cfg["metric"]["config"]["concept"] = "sneaker"
    cfg["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("eval-unlearn")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([str(exe), "run", "--config", str(path)], capture_output=True, text=True, timeout=180,
                         env=env, cwd=tmp_path)
    assert out.returncode == 1
    assert "revival: error: unknown concept 'zebra'; the testbed knows:" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "cache" / "revival").exists()


def test_without_eval_unlearn_one_sentence(monkeypatch):
    for name in [m for m in sys.modules if m == "revival.eval_unlearn" or m.startswith("revival.eval_unlearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "eval_unlearn", None)   # as if not installed
    with pytest.raises(RevivalError, match=r"need eval-unlearn: pip install 'revival\[eval-unlearn\]'\.$"):
        importlib.import_module("revival.eval_unlearn.techniques")


def test_revival_imports_nothing_of_eval_unlearn():
    code = ("import sys, revival, revival.cli, revival.story.demo, revival.audit.run, revival.audit.card; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'eval_unlearn' or 'eval_unlearn' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from tiny_models import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.mark.parametrize("name", [f"sd-{s}.yaml" for s in ("conceptprune", "revived", "defended", "defended-attack")])
def test_sd_examples_run_with_only_the_model_path_edited(name, tiny_sd, cache):
    """An SD example runs once `model` names a pipeline folder (here a tiny random one, on the CPU);
    as shipped, its placeholder path gets the one sentence."""
    from revival.eval_unlearn.config import TechniqueConfig
    from revival.eval_unlearn.metric import ConceptAccuracyConfig
    from revival.unlearn.conceptprune import PRESETS

    cfg = _example(name)
    twin = _example(name.replace("sd-", "testbed-"))
    assert cfg["technique"]["name"] == twin["technique"]["name"] and cfg["metric"]["name"] == twin["metric"]["name"]
    tc = cfg["technique"]["config"]
    with pytest.raises(RevivalError, match="model folder not found: /path/to/stable-diffusion-v1-5; set model"):
        TechniqueConfig.from_dict(tc)
    assert ConceptAccuracyConfig.from_dict(cfg["metric"]["config"]).classifier == "imagenet"
    assert cfg["metric"]["config"]["concept"] == tc["erase_concept"]
    load_entrypoints()
    # (the strongest attacker is picked on 4 images rather than 20, to keep the test short)
    extra = {"select_images": 4} if "defended-attack" in name else {}
    tech = get_technique(cfg["technique"]["name"])(**{**tc, "model": str(tiny_sd), **extra}, cache_dir=str(cache))
    images = tech.generate(["an image of a church", "a church in a harbor"], seed=7)
    assert [im.mode for im in images] == ["RGB", "RGB"] and images[0].size == (16, 16)
    assert tech.info["skill_ratio"] == PRESETS["objects"][0] and tech.info["cache"].startswith(str(cache))
