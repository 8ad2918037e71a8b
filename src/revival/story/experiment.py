"""`revival experiment`: concepts x stages -> the paper's table, as one resumable run.

    original --ConceptPrune--> unlearned --attack--> revived
                                  +--defense--> obfuscated --attack--> obfuscated_revived

The defense is [defense] method: "gaussian" (the paper's obfuscation, the default here, so the
table is the paper's), "resample" (the project's default of `revival defend`) or "decoy"; [defense]
seed: its seed (default: derived from the run's seed, `revival.runtime.seeding.research_defense_seed`, so
the run is reproducible; a publisher's release draws it from the OS).

A TOML config names the model ("testbed" or a local SD folder), the concepts (registry entries,
`revival.concepts.catalog`, optionally overridden or added in the config), the stages, the evaluation
seeds and the attack/defense settings. Minimal config::

    model = "testbed"
    seeds_per_class = 3
    skill_ratio = 0.05
    [[concepts]]
    name = "sneaker"

Layout of DIR::

    manifest.json                    settings, seeds, package versions, model file hashes
    original/images/                 the original model's images (shared by every concept)
    cells/<concept>/<stage>/         images/ (not for "original"), evaluation.{json,md}, cell.json
    results.json results.md results.csv results.png

A cell is finished when its cell.json exists (written last, atomically); a finished cell is never
recomputed, an unfinished one resumes from its images (generation is batch-deterministic), and the
weights of a stage are recomputed from the seeds when a later cell needs them -- so a run killed at
any moment and started again ends with exactly the results of an uninterrupted run. Under
`accelerate launch`/`torchrun` every process runs this; they share each cell's images and the
unlearning statistics, and the main process writes.
"""

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from revival.runtime import distributed as dist
from revival.concepts.catalog import Concept, registry, unlearning_prompts
from revival.errors import RevivalError
from revival.runtime.seeding import research_defense_seed
from revival.story.experiment_config import STAGES, ExperimentConfig, load_config, shipped_config  # noqa: F401 (public names)
from revival.story.experiment_report import CellResult, ExperimentResult, markdown, write_results  # noqa: F401
from revival.io import atomic_write
from revival.story.manifest import changed, input_files, model_files, package_versions
from revival.story.stages import make_obfuscated, make_obfuscated_revived, make_revived, make_unlearned

# --------------------------------------------------------------------------- the run

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def run_inputs(config: ExperimentConfig) -> dict[str, str]:
    """Hashes of every input besides the model's files (text encoder, judges, prompt files)."""
    return input_files(config.model, {c.classifier for c in config.concepts},
                       classifier_path=config.classifier_path, files=(config.prompts, config.word_list))


def manifest(config: ExperimentConfig, runtime: dict) -> dict:
    return {"config": config.to_dict(), "model_files": model_files(config.model),
            "input_files": run_inputs(config), "packages": package_versions(), "runtime": runtime,
            "reproduce": "revival experiment --reproduce manifest.json --out NEW_DIR"}


class _Run:
    """One concept's weights, computed lazily and memoised (each from the seeds)."""

    def __init__(self, pipe, original, concept: Concept, config: ExperimentConfig, progress: bool):
        self.pipe, self.original, self.c, self.cfg, self.progress = pipe, original, concept, config, progress
        self.memo: dict[str, dict] = {"original": original}
        self.signs: dict[str, dict] = {}
        self.layers: list[str] = []
        self.prompts: tuple | None = None
        self.attackers: dict[str, dict] = {}   # obfuscated + attack: what each attacker got
        self.measure = None                     # state -> erased accuracy (set by the run)

    def strongest_attack(self) -> dict[str, torch.Tensor]:
        """Every attacker of the ladder against the obfuscated model, each revived model measured
        (`self.measure`); the one that revives most is the stage, as in `revival demo`
        (`revival.attack.attackers.strongest`). When no attacker revived anything the stage is the obfuscated model;
        when none could run at all, the stage cannot be measured (RevivalError)."""
        src = self.weights("obfuscated")
        state, _, facts = make_obfuscated_revived(self.pipe, src, self.original, self.prompts, self._cp(),
                                                  self.cfg.attack_config(), self.measure)
        self.attackers = {n: {k: f.get(k) for k in ("status", "reason", "located", "erased") if k in f}
                          for n, f in facts["attackers"].items()}
        if not any(f["status"] == "ran" for f in self.attackers.values()):
            raise RevivalError(f"no attacker could run on the obfuscated model of {self.c.name!r}: "
                               + "; ".join(f"{n}: {f['reason']}" for n, f in self.attackers.items()))
        return state

    def weights(self, stage: str) -> dict[str, torch.Tensor]:
        if stage in self.memo:
            return self.memo[stage]
        from revival.unlearn.conceptprune import conceptprune

        if stage == "unlearned":
            words = None
            if self.cfg.word_list:
                from revival.evaluate.prompts import prompt_texts

                words = prompt_texts(self.cfg.word_list)
            target, base = unlearning_prompts(self.c, words)
            self.prompts = (target, base)
            self.pipe.unet.load_state_dict(self.original)
            masks, _ = conceptprune(self.pipe, target, base, self._cp(), progress=False)
            self.layers = sorted(masks)
            state = make_unlearned(self.original, masks)
        elif stage == "revived":   # the paper's attack on the unlearned model (its zeros mark the positions)
            src = self.weights("unlearned")
            state, _ = make_revived(src, self._layers(), self.cfg.attack_config())
            self.signs[stage] = sign_recovery(self.original, src, state, self._layers())
        elif stage == "obfuscated_revived":   # every attacker against the defense; the strongest is the stage
            state = self.strongest_attack()
            self.signs[stage] = {**sign_recovery(self.original, self.weights("unlearned"), state, self._layers()),
                                 "attackers": dict(self.attackers)}
        elif stage == "obfuscated":
            src = self.weights("unlearned")
            state, _ = make_obfuscated(src, self._layers(), self.cfg.defense.get("method", "gaussian"),
                                       self.cfg.defense.get("seed", research_defense_seed(self.cfg.seed)),
                                       stats=self.cfg.defense.get("stats", "row"))
        else:  # pragma: no cover - stages are validated
            raise RevivalError(f"unknown stage {stage!r}.")
        self.memo[stage] = state
        return state

    def _cp(self):
        """ConceptPrune's settings for this concept (the unlearning and the strongest attack's)."""
        from revival.unlearn.conceptprune import ConceptPruneConfig

        return ConceptPruneConfig(skill_ratio=self.c.skill_ratio, steps=self.c.steps, seed=self.cfg.seed,
                                  inference_steps=self.cfg.inference_steps, guidance=self.cfg.guidance)

    def _layers(self) -> list[str]:
        if not self.layers:
            self.weights("unlearned")
        return self.layers


def _measure(pipe, rows, classifier, concept: str, config: ExperimentConfig):
    """state -> (erased, preserved) accuracy of `state` on the evaluation rows (in memory; the UNet's weights are
    put back after)."""
    from revival.attack.attackers.activations import loaded_state
    from revival.evaluate import evaluate_concept

    def measure(state) -> tuple[float, float]:
        with loaded_state(pipe.unet, state):
            res = evaluate_concept(pipe, rows, classifier, concept, steps=config.inference_steps,
                                   guidance=config.guidance, batch_size=config.batch_size)
        return res.erased.value or 0.0, res.preserved.value or 0.0

    return measure


def sign_recovery(original, unlearned, revived, layers) -> dict:
    """Sign accuracy of the attack at the pruned positions: over all of them and over the kept
    (revived) ones (`revival.attack.recovery.score`)."""
    import math

    from revival.attack.recovery import score

    tot = score(original, unlearned, revived, layers).total
    fix = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)  # noqa: E731
    return {"all": fix(tot.sign_acc_all), "kept": fix(tot.sign_acc_kept)}


def eval_rows(config: ExperimentConfig, concept: Concept):
    from revival.evaluate.prompts import default_prompts, read_prompts

    if config.prompts is None:
        return default_prompts(list(concept.classes), config.seeds_per_class, config.first_seed)
    rows, count = [], {}
    for r in read_prompts(config.prompts):
        if r.cls in concept.classes and count.get(r.cls, 0) < config.seeds_per_class:
            count[r.cls] = count.get(r.cls, 0) + 1
            rows.append(replace(r, case=len(rows)))
    missing = [c for c in concept.classes if c not in count]
    if missing:
        raise RevivalError(f"the prompt file {config.prompts} has no rows of class {missing[0]!r}.")
    return rows


def check_out(out: Path, config: ExperimentConfig) -> None:
    """Refuse an output folder that holds another experiment (or is a file)."""
    if out.exists() and not out.is_dir():
        raise RevivalError(f"--out {out} is a file, not a folder.")
    m = out / "manifest.json"
    if m.is_file():
        try:
            old = json.loads(m.read_text())["config"]
        except (ValueError, KeyError, TypeError):
            raise RevivalError(f"{m} is not an experiment manifest; choose another --out.") from None
        if old != json.loads(json.dumps(config.to_dict())):
            raise RevivalError(f"{out} holds an experiment with other settings; choose another --out "
                               "(or run that experiment's own config to resume it).")
    elif out.is_dir() and any(out.iterdir()):
        raise RevivalError(f"--out {out} is a folder with other files; choose a new or empty folder.")


def run_experiment(config: ExperimentConfig, out, *, device=None, dtype=None, progress: bool = True,
                   expected_files: dict | None = None, expected_inputs: dict | None = None) -> ExperimentResult:
    """Run (or resume) the experiment into `out`; write results.{json,md,csv,png} and manifest.json.
    `expected_files` / `expected_inputs` (from a manifest): refuse model files, or any other input
    (text encoder, judges, prompt and word-list files), whose hashes differ."""
    from tqdm.auto import tqdm

    from revival.evaluate import evaluate_concept, get_classifier
    from revival.model.loader import load_model

    out = Path(out)
    dist.agree(config.digest(), "the experiment config")
    check_out(out, config)
    files = model_files(config.model)
    if expected_files is not None and changed(files, expected_files):
        raise RevivalError(f"the model files differ from the manifest's (first: {changed(files, expected_files)[0]}); "
                           "the run would not reproduce it.")
    inputs = run_inputs(config)
    if expected_inputs is not None and changed(inputs, expected_inputs):
        raise RevivalError(f"an input differs from the manifest's (first: {changed(inputs, expected_inputs)[0]}); "
                           "the run would not reproduce it.")
    pipe = load_model(config.model, device=device, dtype=dtype)
    runtime = {"device": str(pipe.device), "dtype": str(pipe.dtype).replace("torch.", ""),
               "processes": dist.num_processes()}
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        man = manifest(config, runtime)
        man["model_files"], man["input_files"] = files, inputs
        atomic_write(out / "manifest.json", json.dumps(man, indent=2) + "\n")
    dist.barrier()
    # the stages' weights live on the CPU (the attack and the defense move each layer where they
    # compute); a stage's state shares every tensor it does not change with the original
    original = {k: v.detach().cpu().clone() for k, v in pipe.unet.state_dict().items()}
    classifiers: dict[str, object] = {}
    result = ExperimentResult(config, {})
    todo = [(c, s) for c in config.concepts for s in config.stages]
    bar = tqdm(total=len(todo), desc="experiment cells", unit="cell", disable=not (progress and dist.is_main()))
    try:
        for c in config.concepts:
            run = None
            for stage in config.stages:
                cell_dir = out / "cells" / slug(c.name) / stage
                done = cell_dir / "cell.json"
                if done.is_file():
                    result.cells[(c.name, stage)] = CellResult.from_dict(json.loads(done.read_text()))
                    bar.update(1)
                    continue
                if c.classifier not in classifiers:
                    classifiers[c.classifier] = get_classifier(
                        c.classifier, str(pipe.device), config.classifier_path if c.classifier != "testbed" else None)
                if run is None:
                    run = _Run(pipe, original, c, config, progress)
                    run.measure = _measure(pipe, eval_rows(config, c), classifiers[c.classifier], c.name, config)
                state = run.weights(stage)
                pipe.unet.load_state_dict(state)
                bar.set_postfix_str(f"{c.name} / {stage}")
                res = evaluate_concept(
                    pipe, eval_rows(config, c), classifiers[c.classifier], c.name, out_dir=cell_dir,
                    steps=config.inference_steps, guidance=config.guidance, batch_size=config.batch_size,
                    progress=progress, settings={"model": config.model, "stage": stage},
                    images_dir=(out / "original" / "images") if stage == "original" else None)
                cell = CellResult(c.name, stage, res.erased, res.preserved,
                                  res.settings.get("unet_sha256", ""), run.signs.get(stage))
                if dist.is_main():
                    atomic_write(done, json.dumps(cell.to_dict(), indent=2) + "\n")
                dist.barrier()
                result.cells[(c.name, stage)] = cell
                result.computed.append((c.name, stage))
                bar.update(1)
    finally:
        bar.close()
        pipe.unet.load_state_dict(original)
    if dist.is_main():
        write_results(result, out)
    dist.barrier()
    return result


def reproduce(manifest_path, out, **kwargs) -> ExperimentResult:
    """Run the experiment a manifest.json records, into `out`, refusing changed model files."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise RevivalError(f"manifest {manifest_path} does not exist.")
    try:
        man = json.loads(manifest_path.read_text())
        data = dict(man["config"])
        files = man["model_files"]
    except (ValueError, KeyError, TypeError):
        raise RevivalError(f"{manifest_path} is not an experiment manifest.") from None
    if not isinstance(man.get("input_files"), dict):
        raise RevivalError(f"{manifest_path} records no hashes of the text encoder, judges and prompt files "
                           "(an older manifest), so a rerun could not be shown to reproduce it.")
    _, groups = registry()
    data["concepts"] = [{k: v for k, v in c.items()} for c in data["concepts"]]
    data = {k: v for k, v in data.items() if v is not None and v != {}}
    config = ExperimentConfig.from_dict(data, where=str(manifest_path))
    return run_experiment(config, out, expected_files=files, expected_inputs=man["input_files"], **kwargs)
