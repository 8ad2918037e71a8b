"""One CLI grammar: shared options defined once, global options before or after the verb,
-o/--out on every verb that writes, outputs checked before any work (nothing written, the heavy
function never called), 'testbed' as a checkpoint, one-file .safetensors outputs, reports beside
their output, --quiet, audit's verdict and exit codes, defend's seed warning, bad input."""
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import file_bytes

from revival.cli import build_parser, main
from revival.io import load_checkpoint

CLI = Path(__file__).resolve().parents[1] / "src" / "revival" / "cli"


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_sentence(err: str, needle: str = "") -> bool:
    return (err.startswith("revival: error: ") and err.count("\n") == 1 and needle in err
            and "Traceback" not in err and "usage:" not in err)


class Forbidden(AssertionError):
    pass


def forbid(monkeypatch, module: str, name: str) -> list:
    """Replace a heavy function by one that records the call and fails the test."""
    import importlib

    calls = []

    def heavy(*a, **k):
        calls.append((a, k))
        raise Forbidden(f"{module}.{name} ran although the outputs were bad")

    monkeypatch.setattr(importlib.import_module(module), name, heavy)
    return calls


# --------------------------------------------------------------------------- the grammar itself

SHARED = ("--threads", "--quiet", "--out", "--report", "--overwrite", "--device", "--dtype", "--seed", "--layers",
          "--model", "--original", "--task", "--concept", "--prompts", "--classifier", "--classifier-path",
          "--inference-steps", "--skill-ratio", "--target-erasure", "--search-images", "--keep", "--magnitude",
          "--solver", "--modules", "--unlearn-steps")


def test_every_shared_option_is_defined_once():
    source = "\n".join(p.read_text() for p in sorted(CLI.glob("*.py")))
    for opt in SHARED:
        assert len(re.findall(rf'add_argument\([^)]*"{opt}"', source)) == 1, opt
    assert source.count("add_argument(") <= 105  # was 151 before the shared parents; + the relearning, erasure and calibration options


WRITERS = {
    "attack": ["attack", "in"], "defend": ["defend", "in"], "unlearn": ["unlearn", "--concept", "bag"],
    "audit": ["audit", "--release", "r", "--concept", "bag"], "evaluate": ["evaluate", "--concept", "bag"],
    "generate": ["generate"], "experiment": ["experiment", "testbed"], "demo": ["demo"],
    "testbed train": ["testbed", "train"], "testbed classifier": ["testbed", "classifier"],
    "testbed detector": ["testbed", "detector", "--kind", "style"],
}


@pytest.mark.parametrize("verb", list(WRITERS))
@pytest.mark.parametrize("spelling", ["-o", "--out", "--output"])
def test_every_writing_verb_takes_o_and_out(verb, spelling):
    args = build_parser().parse_args(WRITERS[verb] + [spelling, "somewhere"])
    assert args.out == Path("somewhere")


@pytest.mark.parametrize("argv", [
    ["--threads", "1", "--quiet", "inspect", "x"],
    ["inspect", "x", "--threads", "1", "--quiet"],
    ["--threads", "1", "inspect", "x", "-q"],
    ["--quiet", "testbed", "train", "--threads", "1"],
])
def test_global_options_before_or_after_the_verb(argv):
    args = build_parser().parse_args(argv)
    assert args.threads == 1 and args.quiet is True


def test_global_defaults_when_left_out():
    args = build_parser().parse_args(["inspect", "x"])
    assert args.threads is None and args.quiet is False


def test_choices_follow_their_registries():
    from revival.cli import options
    from revival.evaluate.classifiers import CLASSIFIERS
    from revival.unlearn.conceptprune import PRESETS

    assert options.TASKS == tuple(PRESETS)
    # the --classifier choices and help are read from the judge registry: a judge registered
    # there is a choice of every verb that judges, named in its help
    p = build_parser()
    for verb in (["evaluate", "--model", "testbed", "--concept", "c", "-o", "x"],
                 ["audit", "--release", "r", "--concept", "c", "-o", "x"]):
        for name in CLASSIFIERS.names():
            assert p.parse_args([*verb, "--classifier", name]).classifier == name
        with pytest.raises(options.UsageError, match="no-such-judge"):
            p.parse_args([*verb, "--classifier", "no-such-judge"])
    help_text = options.CLASSIFIER.format_help()
    assert len(CLASSIFIERS.names()) == 8 and all(n in help_text for n in CLASSIFIERS.names())
    # the audit's description and its --attackers help name every registered attacker (replay was missing)
    from revival.attack.attackers import ATTACKERS

    sub = next(a for a in p._actions if a.dest == "verb" or getattr(a, "choices", None) and "audit" in a.choices)
    audit_help = " ".join(sub.choices["audit"].format_help().split())
    assert len(ATTACKERS) >= 6
    assert f"Run every attacker ({', '.join(ATTACKERS)})" in audit_help
    assert f"default: all of {', '.join(ATTACKERS)}" in audit_help


def test_dtype_spellings():
    p = build_parser()
    assert p.parse_args(["unlearn", "--concept", "c", "-o", "x", "--dtype", "float16"]).dtype == "fp16"
    assert p.parse_args(["audit", "--release", "r", "--concept", "c", "-o", "x", "--dtype", "fp32"]).dtype == "fp32"


# --------------------------------------------------------------------------- bad input: one sentence, exit 2

@pytest.mark.parametrize("argv, needle", [
    (["attack", "x", "-o", "y", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["attack", "x", "-o", "y", "--magnitdue", "mean"], "did you mean --magnitude? (see `revival attack --help`)"),
    (["attack", "x"], "required: -o/--out/--output"),
    (["unlearn", "-o", "y"], "--concept"),
    (["defend", "x", "-o", "y", "--stats", "column"], "invalid choice"),
    (["attack", "x", "-o", "y", "--seed", "one"], "--seed"),
    (["frobnicate"], "invalid choice"),
    (["--threads", "many", "inspect", "x"], "whole number"),
])
def test_parse_errors_are_one_sentence(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and one_sentence(err, needle), err


def test_help_is_not_an_error(capsys):
    rc, out, _ = run(capsys, "attack", "--help")
    assert rc == 0 and "-o OUT, --out OUT" in out


# --------------------------------------------------------------------------- outputs, before any work

def test_missing_parent_folders_are_created(tiny_unet, tmp_path, capsys):
    out = tmp_path / "revived" / "deeper" / "unet"
    rc, stdout, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", out, "--quiet")
    assert rc == 0, err
    assert load_checkpoint(out).format == "diffusers"
    assert json.loads((out.parent / "unet.report.json").read_text())["output"] == str(out)
    assert stdout.count("\n") == 1 and "revived" in stdout and str(out) in stdout


@pytest.mark.parametrize("case", ["existing output", "existing report", "output is the input",
                                  "output inside the input", "report inside the output"])
def test_attack_and_defend_check_outputs_before_any_work(tiny_unet, tmp_path, capsys, monkeypatch, case):
    calls = forbid(monkeypatch, "revival.attack.revive", "revive_checkpoint")
    calls += forbid(monkeypatch, "revival.defense.obfuscate", "defend")
    out = tmp_path / "out"
    extra = []
    if case == "existing output":
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    elif case == "existing report":
        (tmp_path / "out.report.json").write_text("{}")
    elif case == "output is the input":
        out = tiny_unet.pruned_dir
    elif case == "output inside the input":
        out = tiny_unet.pruned_dir / "sub" / "revived.safetensors"
    else:
        extra = ["--report", out / "r.json"]
    needle = {"existing output": "--overwrite", "existing report": "--overwrite", "output is the input": "is an input",
              "output inside the input": "inside the input", "report inside the output": "collide"}[case]
    before, inputs = file_bytes(tmp_path), file_bytes(tiny_unet.pruned_dir)
    for verb in ("attack", "defend"):
        rc, out_text, err = run(capsys, verb, tiny_unet.pruned_dir, "-o", out, *extra, "--quiet")
        assert rc == 2 and one_sentence(err, needle), err
    assert calls == [] and file_bytes(tmp_path) == before and file_bytes(tiny_unet.pruned_dir) == inputs


@pytest.mark.parametrize("case", ["existing output", "existing report", "output is the input",
                                  "output inside the input", "masks are the output"])
def test_unlearn_checks_outputs_before_loading_the_model(tmp_path, capsys, monkeypatch, case):
    from revival.cli.options import testbed_unet

    calls = forbid(monkeypatch, "revival.unlearn.run", "unlearn")
    calls += forbid(monkeypatch, "revival.unlearn.run", "unlearn_method")
    calls += forbid(monkeypatch, "revival.model.loader", "load_model")
    out, extra = tmp_path / "pruned", []
    if case == "existing output":
        out.mkdir()
        (out / "config.json").write_text("{}")
    elif case == "existing report":
        (tmp_path / "pruned.report.json").write_text("{}")
    elif case == "output is the input":
        out = testbed_unet()
    elif case == "output inside the input":
        out = testbed_unet() / "pruned"
    else:
        extra = ["--save-masks", out]
    needle = {"existing output": "--overwrite", "existing report": "--overwrite", "output is the input": "is an input",
              "output inside the input": "inside the input", "masks are the output": "collide"}[case]
    before, weights = file_bytes(tmp_path), file_bytes(testbed_unet())
    for method in ("conceptprune", "neurons"):
        rc, _, err = run(capsys, "unlearn", "--concept", "sneaker", "--method", method, "--target-erasure", "0.2",
                         "-o", out, *extra)
        assert rc == 2 and one_sentence(err, needle), err
    assert calls == [] and file_bytes(tmp_path) == before and file_bytes(testbed_unet()) == weights


def test_testbed_training_checks_its_output_before_training(tmp_path, capsys, monkeypatch):
    calls = forbid(monkeypatch, "revival.testbed.classifier", "train_classifier")
    calls += forbid(monkeypatch, "revival.testbed.train", "train_testbed")
    (tmp_path / "c.safetensors").write_text("mine")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "unet").mkdir()
    for argv, needle in ((["classifier", "-o", tmp_path / "c.safetensors"], "--overwrite"),
                         (["train", "--out", tmp_path / "w"], "--overwrite"),
                         (["train", "-o", tmp_path / "c.safetensors", "--overwrite"], "is a file")):
        rc, _, err = run(capsys, "testbed", *argv)
        assert rc == 2 and one_sentence(err, needle), err
    assert calls == [] and (tmp_path / "c.safetensors").read_text() == "mine"


def test_audit_checks_its_folder_before_any_work(tiny_unet, tmp_path, capsys, monkeypatch):
    calls = forbid(monkeypatch, "revival.audit.run", "audit")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audit.json").write_text("{}")
    rc, _, err = run(capsys, "audit", "--release", tiny_unet.pruned_dir, "--concept", "sneaker", "-o",
                     tmp_path / "audit")
    assert rc == 2 and one_sentence(err, "--overwrite") and calls == []
    rc, _, err = run(capsys, "audit", "--release", tiny_unet.pruned_dir, "--concept", "sneaker", "--out",
                     tiny_unet.pruned_dir / "audit")
    assert rc == 2 and one_sentence(err, "inside the input") and calls == []


# --------------------------------------------------------------------------- 'testbed', one-file outputs, reports

def test_testbed_names_the_embedded_unet(capsys):
    from revival.cli.options import checkpoint_path
    from revival.testbed.pipeline import testbed_unet_dir

    for task in (None, "objects", "artists", "nudity"):
        assert checkpoint_path("testbed", task) == Path(testbed_unet_dir(task or "objects"))
        assert (checkpoint_path("testbed", task) / "config.json").is_file()
    rc, out, _ = run(capsys, "inspect", "testbed", "--json")
    info = json.loads(out)
    assert rc == 0 and info["format"] == "diffusers" and info["exposed"] is False


def test_score_and_audit_take_original_testbed(tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from revival.cli.options import testbed_unet
    from revival.release.layers import select_layers

    ckpt = load_checkpoint(testbed_unet())
    state = {k: ckpt.tensors[k].clone() for k in ckpt.tensors}
    for name in select_layers(state)[:2]:
        state[name][:, :3] = 0
    save_file(state, str(tmp_path / "pruned.safetensors"))
    rc, out, err = run(capsys, "score", "--original", "testbed", "--pruned", tmp_path / "pruned.safetensors",
                       "--revived", tmp_path / "pruned.safetensors", "--json")
    assert rc == 0, err
    assert json.loads(out)["overall"]["pruned"] == sum(3 * state[n].shape[0] for n in select_layers(state)[:2])

    seen = {}

    class Result:
        verdict = "inconclusive"

        def verdict_line(self):
            return "verdict: INCONCLUSIVE (limit 0.10): the original was not evaluated"

        def summary(self):
            return "summary line\n" + self.verdict_line()

    def fake_audit(model, release, concept, out, **kwargs):
        seen.update(kwargs, release=release)
        return Result()

    monkeypatch.setattr("revival.audit.run.audit", fake_audit)
    rc, out, _ = run(capsys, "audit", "--release", tmp_path / "pruned.safetensors", "--concept", "sneaker",
                     "--original", "testbed", "--task", "artists", "-o", tmp_path / "a", "--device", "cpu",
                     "--dtype", "float16", "--quiet")
    assert rc == 4 and out == Result().verdict_line() + "\n"
    assert seen["original"] == testbed_unet("artists") and seen["device"] == "cpu" and seen["dtype"] == "fp16"
    for verdict, code in (("pass", 0), ("fail", 3), ("inconclusive", 4)):
        Result.verdict = verdict
        rc, out, _ = run(capsys, "audit", "--release", tmp_path / "pruned.safetensors", "--concept", "sneaker",
                         "-o", tmp_path / "a")
        assert rc == code and out.startswith("summary line\nverdict:")
    assert seen["dtype"] is None and seen["original"] is None


def test_a_safetensors_name_writes_one_file(tiny_unet, tmp_path, capsys):
    for verb, seed in (("attack", ["--seed", "3"]), ("defend", ["--seed", "3"])):
        one, folder = tmp_path / f"{verb}.safetensors", tmp_path / f"{verb}-folder"
        for out in (one, folder):
            rc, _, err = run(capsys, verb, tiny_unet.pruned_dir, "-o", out, *seed, "--quiet")
            assert rc == 0, err
        assert one.is_file() and folder.is_dir()
        a, b = load_checkpoint(one), load_checkpoint(folder)
        assert a.format == "safetensors" and a.naming == "diffusers" and set(a.tensors) == set(b.tensors)
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in b.tensors)
        assert json.loads((tmp_path / f"{verb}.safetensors.report.json").read_text())["output"] == str(one)


@pytest.mark.parametrize("kind", ["folder_sharded", "folder_bin", "folder_fp16"])
def test_any_diffusers_folder_to_one_file(checkpoint_files, tmp_path, capsys, kind):
    src = checkpoint_files[kind]
    before = file_bytes(src)
    rc, _, err = run(capsys, "attack", src, "-o", tmp_path / "one.safetensors", "--seed", "2", "--quiet")
    assert rc == 0, err
    rc, _, err = run(capsys, "attack", src, "-o", tmp_path / "folder", "--seed", "2", "--quiet")
    assert rc == 0, err
    a, b = load_checkpoint(tmp_path / "one.safetensors"), load_checkpoint(tmp_path / "folder")
    assert (tmp_path / "one.safetensors").is_file() and a.naming == "diffusers"
    assert set(a.tensors) == set(b.tensors)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) and a.tensors[k].dtype == b.tensors[k].dtype for k in b.tensors)
    assert file_bytes(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "folder.report.json", "one.safetensors",
                                                           "one.safetensors.report.json"]


def test_reports_go_beside_the_output_never_inside(tiny_unet, tmp_path, capsys):
    from test_conceptprune_erasure import build_tiny_sd

    for verb in ("attack", "defend"):
        out = tmp_path / verb / "unet"
        rc, _, err = run(capsys, verb, tiny_unet.pruned_dir, "-o", out, "--quiet")
        assert rc == 0, err
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
        assert json.loads((tmp_path / verb / "unet.report.json").read_text())["output"] == str(out)
    sd = build_tiny_sd(tmp_path / "sd")
    out = tmp_path / "release" / "unet"
    rc, _, err = run(capsys, "unlearn", "--model", sd, "--concept", "sneaker", "--skill-ratio", "0.05",
                     "--unlearn-steps", "2", "--inference-steps", "3", "-o", out, "--quiet")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((tmp_path / "release" / "unet.report.json").read_text())["config"]["skill_ratio"] == 0.05
    one = tmp_path / "release" / "coat.safetensors"   # the same pruning as one file
    rc, _, err = run(capsys, "unlearn", "--model", sd, "--concept", "sneaker", "--skill-ratio", "0.05",
                     "--unlearn-steps", "2", "--inference-steps", "3", "-o", one, "--quiet")
    assert rc == 0, err
    a, b = load_checkpoint(one), load_checkpoint(out)
    assert one.is_file() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in b.tensors)
    assert (tmp_path / "release" / "coat.safetensors.report.json").is_file()


# --------------------------------------------------------------------------- --quiet, the seed warning

def test_quiet_silences_third_party_output_but_prints_the_result(tiny_unet, tmp_path, capsys, monkeypatch):
    import importlib

    from tqdm.auto import tqdm

    R = importlib.import_module("revival.attack.revive")  # the package re-exports a function of that name

    real = R.revive_checkpoint
    inside = {}

    def noisy(*a, **k):
        warnings.warn("a third-party warning")
        for _ in tqdm(range(3), desc="third-party bar"):
            pass
        inside["transformers"] = logging.getLogger("transformers").isEnabledFor(logging.WARNING)
        return real(*a, **k)

    monkeypatch.setattr(R, "revive_checkpoint", noisy)
    for quiet in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rc, out, err = run(capsys, "attack", tiny_unet.pruned_dir, "-o", tmp_path / f"q{quiet}", "--seed", "1",
                               *(["--quiet"] if quiet else []))
        assert rc == 0, err
        assert out.startswith("revived ") and f"-> {tmp_path / f'q{quiet}'}" in out
        assert ("third-party bar" in err) is not quiet
        assert any("third-party warning" in str(w.message) for w in caught) is not quiet
        assert inside["transformers"] is not quiet
    assert out.count("\n") == 1 and err == ""
    assert logging.getLogger("transformers").level != logging.ERROR   # restored after the verb
    bar = tqdm(range(2), disable=False)
    assert not bar.disable
    bar.close()


def test_defend_warns_about_a_known_seed(tiny_unet, tmp_path, capsys):
    rc, out, err = run(capsys, "defend", tiny_unet.pruned_dir, "-o", tmp_path / "a", "--seed", "4", "--quiet")
    assert rc == 0 and err.startswith("revival: warning: ") and "seed" in err and "seed 4" in out
    rc, out, err = run(capsys, "defend", tiny_unet.pruned_dir, "-o", tmp_path / "b", "--quiet")
    assert rc == 0 and err == "" and "secret seed" in out
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert any(not torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


# --------------------------------------------------------------------------- the least-damage search's bar

def test_least_damage_shows_a_progress_bar(capsys):
    from test_least_damage_search import _stats

    from revival.unlearn.conceptprune import ConceptPruneConfig
    from revival.unlearn.least_damage import least_damage

    stats, cfg = _stats(), ConceptPruneConfig(skill_ratio=0.05, steps=4)
    erased = lambda masks: 0.0 if sum(int(m.sum()) for m in masks.values()) > 100 else 1.0  # noqa: E731
    res = least_damage(stats, cfg, erased, target=0.2, iterations=4)
    assert "least-damage search" in capsys.readouterr().err and len(res.probes) == 4
    lines = []
    least_damage(stats, cfg, erased, target=0.2, iterations=4, progress=lines.append)
    assert len(lines) == 4 and "least-damage search" not in capsys.readouterr().err
    least_damage(stats, cfg, erased, target=0.2, iterations=4, progress=False)
    assert capsys.readouterr().err == ""
