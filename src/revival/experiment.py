"""`revival experiment`: concepts x stages -> the paper's table, as one resumable run.

    original --ConceptPrune--> unlearned --attack--> revived
                                  +--defense--> obfuscated --attack--> obfuscated_revived

The defense is [defense] method: "gaussian" (the paper's obfuscation, the default here, so the
table is the paper's), "resample" (the project's default of `revival defend`) or "decoy".

A TOML config names the model ("testbed" or a local SD folder), the concepts (registry entries,
`revival.concepts`, optionally overridden or added in the config), the stages, the evaluation
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
from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

import torch

from . import distributed as dist
from .concepts import Concept, lookup, make_concept, registry, unlearning_prompts
from .errors import RevivalError
from .intervals import Proportion
from .io import atomic_write
from .manifest import changed, input_files, model_files, package_versions

STAGES = ("original", "unlearned", "revived", "obfuscated", "obfuscated_revived")
STAGE_ALIASES = {"obfuscated+attack": "obfuscated_revived", "obfuscated_attack": "obfuscated_revived",
                 "obfuscated + attack": "obfuscated_revived", "pruned": "unlearned"}
ATTACK_KEYS = {"solver", "keep", "magnitude", "rank", "lam", "seed", "max_iters", "tol", "side"}
DEFENSE_KEYS = {"method", "stats", "seed"}
CONCEPT_OVERRIDES = {f.name for f in fields(Concept)} - {"name"}


def shipped_config(name: str = "testbed") -> Path:
    """Path of a config shipped with the package (e.g. "testbed": all 10 testbed concepts)."""
    p = Path(str(resources.files("revival").joinpath("experiments", f"{name}.toml")))
    if not p.is_file():
        raise RevivalError(f"no shipped experiment config named {name!r}.")
    return p


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of an experiment (see the module docstring). `concepts` are resolved
    registry entries; `stages` canonical names (STAGES order)."""

    concepts: tuple[Concept, ...]
    model: str = "testbed"
    stages: tuple[str, ...] = STAGES
    seeds_per_class: int = 12
    first_seed: int = 1000
    seed: int = 0
    inference_steps: int | None = None
    guidance: float | None = None
    batch_size: int = 100
    prompts: str | None = None          # evaluation CSV (prompt, class, seed); default: held-out set
    word_list: str | None = None        # scenes/things/humans file for the task prompts (parity runs)
    classifier_path: str | None = None
    attack: dict = field(default_factory=dict)
    defense: dict = field(default_factory=dict)

    @property
    def model_kind(self) -> str:
        return "testbed" if self.model == "testbed" else "sd"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["concepts"] = [c.to_dict() for c in self.concepts]
        d["stages"] = list(self.stages)
        return d

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict, where: str = "the config", base_dir: Path | None = None) -> "ExperimentConfig":
        data = dict(data)
        known = {f.name for f in fields(cls)} | {"skill_ratio", "unlearn_steps", "classifier"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RevivalError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))}).")
        model = data.get("model", "testbed")
        if not isinstance(model, str) or not model:
            raise RevivalError(f"{where}: model must be 'testbed' or a local Stable Diffusion folder.")
        if model != "testbed":
            folder = _resolve(model, base_dir)
            if not (folder / "model_index.json").is_file():
                raise RevivalError(f"{where}: the model folder {folder} does not exist or is not a diffusers "
                                   "pipeline folder (no model_index.json).")
            model = str(folder)
        kind = "testbed" if model == "testbed" else "sd"
        raw_concepts = data.get("concepts")
        if not isinstance(raw_concepts, list) or not raw_concepts:
            raise RevivalError(f"{where}: name at least one concept ([[concepts]] name = \"...\").")
        overrides = {k: data[k] for k in ("skill_ratio", "classifier") if k in data}
        if "unlearn_steps" in data:
            overrides["steps"] = data["unlearn_steps"]
        concepts = []
        _, groups = registry()
        for i, c in enumerate(raw_concepts):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise RevivalError(f"{where}: concept {i + 1} needs a name.")
            bad = sorted(set(c) - CONCEPT_OVERRIDES - {"name"})
            if bad:
                raise RevivalError(f"{where}: unknown key {bad[0]!r} in concept {c['name']!r} "
                                   f"(known: name, {', '.join(sorted(CONCEPT_OVERRIDES))}).")
            try:
                base = lookup(c["name"], kind).to_dict()
            except RevivalError:
                if "classes" not in c:  # not in the registry and not defined here
                    raise
                base = {"model": kind}
            entry = make_concept({**base, **overrides, **{k: v for k, v in c.items()}}, groups, where)
            if entry.model != kind:
                raise RevivalError(f"{where}: concept {entry.name!r} is a {entry.model} concept, the model is {kind}.")
            concepts.append(entry)
        names = [c.name for c in concepts]
        if len(set(names)) != len(names):
            raise RevivalError(f"{where}: a concept is named twice.")
        from .evaluate.classifiers import CLASSIFIERS

        for c in concepts:
            if c.classifier not in CLASSIFIERS:
                raise RevivalError(f"{where}: concept {c.name!r} asks for the unknown classifier {c.classifier!r} "
                                   f"(known: {', '.join(CLASSIFIERS)}).")
        stages = data.get("stages", list(STAGES))
        if not isinstance(stages, list) or not stages:
            raise RevivalError(f"{where}: stages must be a non-empty list.")
        canon = []
        for s in stages:
            s2 = STAGE_ALIASES.get(s, s)
            if s2 not in STAGES:
                raise RevivalError(f"{where}: unknown stage {s!r} (known: {', '.join(STAGES)}, 'obfuscated+attack').")
            canon.append(s2)
        stages = tuple(s for s in STAGES if s in canon)
        attack, defense = data.get("attack", {}), data.get("defense", {})
        for name, table, keys in (("attack", attack, ATTACK_KEYS), ("defense", defense, DEFENSE_KEYS)):
            if not isinstance(table, dict):
                raise RevivalError(f"{where}: [{name}] must be a table.")
            bad = sorted(set(table) - keys)
            if bad:
                raise RevivalError(f"{where}: unknown key {bad[0]!r} in [{name}] (known: {', '.join(sorted(keys))}).")
        for name in ("prompts", "word_list", "classifier_path"):
            if data.get(name) is not None:
                p = _resolve(data[name], base_dir)
                if not p.exists():
                    raise RevivalError(f"{where}: {name} {p} does not exist.")
                data[name] = str(p)
        kwargs = {k: data[k] for k in ("seeds_per_class", "first_seed", "seed", "inference_steps", "guidance",
                                       "batch_size", "prompts", "word_list", "classifier_path") if k in data}
        for k in ("seeds_per_class", "batch_size"):
            if k in kwargs and (not isinstance(kwargs[k], int) or isinstance(kwargs[k], bool) or kwargs[k] < 1):
                raise RevivalError(f"{where}: {k} must be a positive integer, got {kwargs[k]!r}.")
        for k in ("first_seed", "seed"):
            if k in kwargs and (not isinstance(kwargs[k], int) or kwargs[k] < 0):
                raise RevivalError(f"{where}: {k} must be a non-negative integer, got {kwargs[k]!r}.")
        cfg = cls(concepts=tuple(concepts), model=model, stages=stages, attack=dict(attack),
                  defense=dict(defense), **kwargs)
        cfg.attack_config()  # validates the attack settings
        if defense.get("stats", "row") not in ("row", "layer"):
            raise RevivalError(f"{where}: [defense] stats must be 'row' or 'layer'.")
        from .defense import DEFENSES

        if defense.get("method", "gaussian") not in DEFENSES:
            raise RevivalError(f"{where}: [defense] method must be one of {', '.join(DEFENSES)}.")
        return cfg

    def attack_config(self):
        from .attack.revive import AttackConfig

        try:
            return AttackConfig(**{"seed": self.seed, **self.attack})
        except TypeError as exc:
            raise RevivalError(f"bad [attack] settings ({exc}).") from None


def _resolve(p: str, base_dir: Path | None) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() or base_dir is None else (base_dir / path)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML config (relative paths inside it are relative to its folder);
    "testbed" names the shipped 10-concept config."""
    path = Path(path)
    if not path.exists() and str(path) == "testbed":
        path = shipped_config("testbed")
    if not path.is_file():
        raise RevivalError(f"config file {path} does not exist.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RevivalError(f"{path} is not a valid TOML file ({str(exc).splitlines()[0]}).") from None
    return ExperimentConfig.from_dict(data, where=str(path), base_dir=path.parent.resolve())


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


@dataclass
class CellResult:
    concept: str
    stage: str
    erased: Proportion
    preserved: Proportion
    unet_sha256: str
    sign_recovery: dict | None = None

    def to_dict(self) -> dict:
        return {"concept": self.concept, "stage": self.stage, "erased": self.erased.to_dict(),
                "preserved": self.preserved.to_dict(), "unet_sha256": self.unet_sha256,
                **({"sign_recovery": self.sign_recovery} if self.sign_recovery is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "CellResult":
        p = lambda x: Proportion(int(x["hits"]), int(x["n"]))  # noqa: E731
        return cls(d["concept"], d["stage"], p(d["erased"]), p(d["preserved"]), d["unet_sha256"],
                   d.get("sign_recovery"))


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    cells: dict[tuple[str, str], CellResult]
    computed: list[tuple[str, str]] = field(default_factory=list)   # cells made by this run

    def rows(self) -> list[dict]:
        out = []
        for c in self.config.concepts:
            cell = {s: self.cells[(c.name, s)] for s in self.config.stages}
            signs = {s: cell[s].sign_recovery for s in self.config.stages if cell[s].sign_recovery}
            out.append({"concept": c.name, "task": c.task,
                        "erased": {s: cell[s].erased.value for s in self.config.stages},
                        "preserved": {s: cell[s].preserved.value for s in self.config.stages},
                        "sign_recovery": signs,
                        "ci95": {"erased": {s: cell[s].erased.to_dict()["ci95"] for s in self.config.stages},
                                 "preserved": {s: cell[s].preserved.to_dict()["ci95"] for s in self.config.stages}},
                        "images": {"erased": cell[self.config.stages[0]].erased.n,
                                   "preserved": cell[self.config.stages[0]].preserved.n}})
        return out

    def to_dict(self) -> dict:
        return {"rows": self.rows()}


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
        (`self.measure`); the one that revives most is the stage, as in `revival demo`. An attacker
        that locates nothing leaves the obfuscated model; one that crashes is recorded; when none
        could run, the stage cannot be measured (RevivalError)."""
        from .attack.activations import release_activations
        from .attack.attackers import ATTACKERS, AttackContext, run_attacker

        src = self.weights("obfuscated")
        ctx = AttackContext(config=self.cfg.attack_config(), skill_ratio=min(1.0, self.c.skill_ratio), steps=self.c.steps,
                            prompts=self.prompts,
                            activations=release_activations(self.pipe, src, self.c.steps, self.cfg.seed,
                                                            self.cfg.inference_steps, self.cfg.guidance,
                                                            layers=self._layers()))
        best, best_acc = src, None
        for name in ATTACKERS:
            try:
                updates, res = run_attacker(name, src, self._layers(), ctx)
            except Exception as exc:   # recorded; the stage needs at least one attacker that ran
                self.attackers[name] = {"status": "errored", "reason": f"{type(exc).__name__}: {exc}"}
                continue
            state = {**src, **updates}
            acc = self.measure(state) if updates else self.measure(src)
            self.attackers[name] = {"status": "ran", "located": res.located, "erased": acc}
            if best_acc is None or acc > best_acc:
                best, best_acc = state, acc
        if best_acc is None:
            raise RevivalError(f"no attacker could run on the obfuscated model of {self.c.name!r}: "
                               + "; ".join(f"{n}: {a['reason']}" for n, a in self.attackers.items()))
        return best

    def weights(self, stage: str) -> dict[str, torch.Tensor]:
        if stage in self.memo:
            return self.memo[stage]
        from .attack.revive import revive
        from .defense import apply_defense
        from .unlearn.conceptprune import ConceptPruneConfig, apply_masks, conceptprune

        if stage == "unlearned":
            words = None
            if self.cfg.word_list:
                from .evaluate.prompts import prompt_texts

                words = prompt_texts(self.cfg.word_list)
            target, base = unlearning_prompts(self.c, words)
            self.prompts = (target, base)
            cp = ConceptPruneConfig(skill_ratio=self.c.skill_ratio, steps=self.c.steps, seed=self.cfg.seed,
                                    inference_steps=self.cfg.inference_steps, guidance=self.cfg.guidance)
            self.pipe.unet.load_state_dict(self.original)
            masks, _ = conceptprune(self.pipe, target, base, cp, progress=False)
            self.layers = sorted(masks)
            state = {**self.original, **apply_masks(self.original, masks)}
        elif stage == "revived":   # the paper's attack on the unlearned model (its zeros mark the positions)
            src = self.weights("unlearned")
            updates, _ = revive(src, self._layers(), self.cfg.attack_config(), progress=False)
            state = {**src, **updates}
            self.signs[stage] = sign_recovery(self.original, src, state, self._layers())
        elif stage == "obfuscated_revived":   # every attacker against the defense; the strongest is the stage
            state = self.strongest_attack()
            self.signs[stage] = {**sign_recovery(self.original, self.weights("unlearned"), state, self._layers()),
                                 "attackers": dict(self.attackers)}
        elif stage == "obfuscated":
            src = self.weights("unlearned")
            updates, _ = apply_defense(src, self._layers(), self.cfg.defense.get("method", "gaussian"),
                                       self.cfg.defense.get("seed", self.cfg.seed),
                                       stats=self.cfg.defense.get("stats", "row"))
            state = {**src, **updates}
        else:  # pragma: no cover - stages are validated
            raise RevivalError(f"unknown stage {stage!r}.")
        self.memo[stage] = state
        return state

    def _layers(self) -> list[str]:
        if not self.layers:
            self.weights("unlearned")
        return self.layers


def _measure(pipe, rows, classifier, concept: str, config: ExperimentConfig):
    """state -> erased accuracy of `state` on the evaluation rows (in memory; the UNet's weights are
    put back after)."""
    from .attack.activations import loaded_state
    from .evaluate import evaluate_concept

    def measure(state) -> float:
        with loaded_state(pipe.unet, state):
            res = evaluate_concept(pipe, rows, classifier, concept, steps=config.inference_steps,
                                   guidance=config.guidance, batch_size=config.batch_size)
        return res.erased.value or 0.0

    return measure


def sign_recovery(original, unlearned, revived, layers) -> dict:
    """Sign accuracy of the attack at the pruned positions: over all of them and over the kept
    (revived) ones (`revival.metrics.score`)."""
    import math

    from .metrics import score

    tot = score(original, unlearned, revived, layers).total
    fix = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)  # noqa: E731
    return {"all": fix(tot.sign_acc_all), "kept": fix(tot.sign_acc_kept)}


def eval_rows(config: ExperimentConfig, concept: Concept):
    from .evaluate.prompts import default_prompts, read_prompts

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

    from .evaluate import evaluate_concept, get_classifier
    from .models import load_model

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


# --------------------------------------------------------------------------- outputs

LABELS = {"original": "original", "unlearned": "unlearned", "revived": "revived",
          "obfuscated": "obfuscated", "obfuscated_revived": "obfuscated + attack"}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def table(result: ExperimentResult) -> tuple[list[str], list[list]]:
    """The paper's table: a row per concept (erased accuracy per stage, preserved per stage,
    sign recovery of the attack), then the mean row."""
    st = result.config.stages
    head = (["concept", "task"] + [f"erased {LABELS[s]}" for s in st] + [f"preserved {LABELS[s]}" for s in st]
            + ["sign recovery (all)", "sign recovery (kept)"])
    body = []
    for r in result.rows():
        signs = r["sign_recovery"].get("revived") or {}
        body.append([r["concept"], r["task"]] + [r["erased"][s] for s in st] + [r["preserved"][s] for s in st]
                    + [signs.get("all"), signs.get("kept")])
    mean = ["mean", ""] + [_mean([row[i] for row in body]) for i in range(2, len(head))]
    return head, body + [mean]


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(result: ExperimentResult) -> str:
    head, rows = table(result)
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [f"**{r[0]}**" if r[0] == "mean" else r[0]] + [_fmt(v) for v in r[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    st = result.config.stages
    ci = ["", "95% Wilson intervals of every cell (erased; preserved):", "",
          "| concept | " + " | ".join(LABELS[s] for s in st) + " |", "|---|" + "---|" * len(st)]
    for r in result.rows():
        ci.append(f"| {r['concept']} | " + " | ".join(
            f"{_iv(r['ci95']['erased'][s])}; {_iv(r['ci95']['preserved'][s])}" for s in st) + " |")
    n = result.rows()[0]["images"]
    return ("# Experiment: erased / preserved accuracy per stage\n\n"
            f"model: {result.config.model}; {n['erased']} images of the erased concept and {n['preserved']} of "
            f"the other classes per cell.\n\n" + "\n".join(lines) + "\n" + "\n".join(ci) + "\n")


def _iv(x) -> str:
    return "n/a" if x is None else f"[{x[0]:.2f}, {x[1]:.2f}]"


def csv_text(result: ExperimentResult) -> str:
    head, rows = table(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        w.writerow([("" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)) for v in r])
    return buf.getvalue()


def bar_png(result: ExperimentResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = result.config.stages
    rows = result.rows()
    e = [_mean([r["erased"][s] for r in rows]) or 0.0 for s in st]
    p = [_mean([r["preserved"][s] for r in rows]) or 0.0 for s in st]
    fig, ax = plt.subplots(figsize=(1.6 * len(st) + 2, 3.4), dpi=100)
    x = range(len(st))
    ax.bar([i - 0.2 for i in x], e, 0.4, label="erased concept")
    ax.bar([i + 0.2 for i in x], p, 0.4, label="other classes")
    ax.set_xticks(list(x), [LABELS[s] for s in st], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("classifier accuracy (mean over concepts)")
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_results(result: ExperimentResult, out: Path) -> None:
    atomic_write(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write(out / "results.md", markdown(result))
    atomic_write(out / "results.csv", csv_text(result))
    atomic_write(out / "results.png", bar_png(result))


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
