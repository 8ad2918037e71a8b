"""The concept registry (package data `concepts.toml`): task, classifier, evaluated classes,
ConceptPrune's prompt sets and settings per concept -- a new concept is an entry, not code.

    entry = lookup("church", "sd")
    target, base = unlearning_prompts(entry)     # the reference's own (base, target) pairs

A config may add entries of its own (`[[concepts]]` tables carrying the same keys).
"""
from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources

from revival.errors import RevivalError

UNLEARNING = ("testbed", "scenes", "pairs", "prompts")
MODELS = ("testbed", "sd")


@dataclass(frozen=True)
class Concept:
    """One registry entry (see concepts.toml for the meaning of each field)."""

    name: str
    model: str = "sd"
    task: str = "objects"
    classifier: str = "testbed"
    classes: tuple[str, ...] = ()
    unlearning: str = "scenes"
    skill_ratio: float = 0.02
    steps: int = 10
    pairs: tuple[tuple[str, str], ...] = ()
    target_prompts: tuple[str, ...] = ()
    base_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from revival.unlearn.prompt_sets import PRESETS

        where = f"concept {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise RevivalError("a concept needs a non-empty name.")
        if self.model not in MODELS:
            raise RevivalError(f"{where}: model must be one of {', '.join(MODELS)}, got {self.model!r}.")
        if self.task not in PRESETS:
            raise RevivalError(f"{where}: task must be one of {', '.join(PRESETS)}, got {self.task!r}.")
        if self.unlearning not in UNLEARNING:
            raise RevivalError(f"{where}: unlearning must be one of {', '.join(UNLEARNING)}, got {self.unlearning!r}.")
        if self.unlearning == "pairs" and not self.pairs:
            raise RevivalError(f"{where}: unlearning = 'pairs' needs a list of [base, target] pairs.")
        if self.unlearning == "prompts" and not (self.target_prompts and self.base_prompts):
            raise RevivalError(f"{where}: unlearning = 'prompts' needs target_prompts and base_prompts.")
        if any(len(p) != 2 or not all(isinstance(s, str) and s for s in p) for p in self.pairs):
            raise RevivalError(f"{where}: every pair must be [base prompt, target prompt].")
        if not self.classes or self.name not in self.classes:
            raise RevivalError(f"{where}: its evaluated classes must include the concept itself.")
        if not (isinstance(self.skill_ratio, (int, float)) and 0 < self.skill_ratio <= 1):
            raise RevivalError(f"{where}: skill_ratio must be in (0, 1], got {self.skill_ratio!r}.")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise RevivalError(f"{where}: steps must be a positive integer, got {self.steps!r}.")

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


def make_concept(d: dict, groups: dict[str, list[str]], where: str = "the registry") -> Concept:
    """A Concept from a TOML table (unknown keys refused; `classes` may name a group)."""
    known = {f.name for f in fields(Concept)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise RevivalError(f"{where}: unknown key {unknown[0]!r} in concept {d.get('name', '?')!r} "
                           f"(known: {', '.join(sorted(known))}).")
    d = dict(d)
    classes = d.get("classes", ())
    if isinstance(classes, str):
        if classes not in groups:
            raise RevivalError(f"{where}: concept {d.get('name')!r} names an unknown class group {classes!r}.")
        classes = groups[classes]
    d["classes"] = tuple(classes)
    d["pairs"] = tuple(tuple(p) for p in d.get("pairs", ()))
    for k in ("target_prompts", "base_prompts"):
        d[k] = tuple(d.get(k, ()))
    try:
        return Concept(**d)
    except TypeError as exc:
        raise RevivalError(f"{where}: bad concept entry ({exc}).") from None


@lru_cache(maxsize=1)
def registry() -> tuple[dict[tuple[str, str], Concept], dict[str, list[str]]]:
    """((name, model) -> Concept, groups) of the shipped concepts.toml."""
    text = resources.files("revival.concepts").joinpath("concepts.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    groups = {k: list(v) for k, v in data.get("groups", {}).items()}
    entries = {}
    for d in data.get("concept", []):
        c = make_concept(d, groups)
        entries[(c.name, c.model)] = c
    return entries, groups


def lookup(name: str, model: str) -> Concept:
    """The registry entry of `name` for a model kind ("testbed" or "sd")."""
    entries, _ = registry()
    if (name, model) in entries:
        return entries[(name, model)]
    known = sorted(n for n, m in entries if m == model)
    raise RevivalError(f"unknown concept {name!r} for the {model} model; the registry knows: {', '.join(known)} "
                       "(add an entry with its task, classifier, classes and prompts to the config).")


def find_pairs(name: str) -> tuple[tuple[str, str], ...] | None:
    """The reference's own (base, target) prompt pairs of an object, when it has some."""
    for (n, _m), c in registry()[0].items():
        if n.lower() == name.lower() and c.unlearning == "pairs":
            return c.pairs
    return None


def task_prompts(task: str, concept: str, words: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair for a task (`revival.unlearn.prompt_sets.task_prompts`), except
    for an object with its own (base, target) pairs in the registry (church, garbage truck) and no
    `words`: those pairs."""
    from revival.unlearn.prompt_sets import task_prompts as paper_task_prompts

    if task == "objects" and words is None:
        pairs = find_pairs(concept)
        if pairs:
            return [t for _, t in pairs], [b for b, _ in pairs]
    return paper_task_prompts(task, concept, words)


def unlearning_prompts(c: Concept, words: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(target, base) prompt sets ConceptPrune uses for this concept."""
    from revival.unlearn.prompt_sets import concept_prompts

    if c.unlearning == "testbed":
        return concept_prompts(c.name, c.classes)
    if c.unlearning == "pairs" and words is None:
        return [t for _, t in c.pairs], [b for b, _ in c.pairs]
    if c.unlearning == "prompts":
        return list(c.target_prompts), list(c.base_prompts)
    return task_prompts(c.task, c.name, words)
