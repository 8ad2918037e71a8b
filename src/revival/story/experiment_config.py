"""The settings of `revival experiment`: a TOML config -> a validated `ExperimentConfig` (model,
concepts from the registry, stages, seeds, attack and defense settings). See `experiment.py`."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from revival.concepts.catalog import Concept, lookup, make_concept, registry
from revival.errors import RevivalError
from revival.story.stages import STAGES, canonical, in_order

ATTACK_KEYS = {"solver", "keep", "magnitude", "rank", "lam", "seed", "max_iters", "tol", "side"}
DEFENSE_KEYS = {"method", "stats", "seed"}
CONCEPT_OVERRIDES = {f.name for f in fields(Concept)} - {"name"}


def shipped_config(name: str = "testbed") -> Path:
    """Path of a config shipped with the package (e.g. "testbed": all 10 testbed concepts)."""
    p = Path(str(resources.files("revival.story").joinpath("experiments", f"{name}.toml")))
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
        from revival.evaluate.classifiers import CLASSIFIERS

        for c in concepts:
            if c.classifier not in CLASSIFIERS:
                raise RevivalError(f"{where}: concept {c.name!r} asks for the unknown classifier {c.classifier!r} "
                                   f"(known: {', '.join(CLASSIFIERS)}).")
        stages = data.get("stages", list(STAGES))
        if not isinstance(stages, list) or not stages:
            raise RevivalError(f"{where}: stages must be a non-empty list.")
        for s in stages:
            try:
                canonical(s)
            except RevivalError as exc:
                raise RevivalError(f"{where}: {exc}") from None
        stages = in_order(stages)
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
        from revival.defense import DEFENSES

        if defense.get("method", "gaussian") not in DEFENSES:
            raise RevivalError(f"{where}: [defense] method must be one of {', '.join(DEFENSES)}.")
        return cfg

    def attack_config(self):
        from revival.attack.revive import AttackConfig

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
