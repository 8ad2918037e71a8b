"""The settings of revival's eval-unlearn techniques: one dataclass for the four stages.

A technique config (the `technique.config` mapping of an eval-unlearn run config) holds:

    erase_concept     the concept (testbed: one of its classes; SD: the class the judge names)
    model             "testbed" or a local Stable Diffusion pipeline folder (model_index.json, unet/)
    task              objects | artists | nudity (SD: ConceptPrune's prompts and preset; the testbed
                      runs its object task)
    skill_ratio       ConceptPrune's ratio; None: on the testbed the least that erases the concept
                      to `target_erasure` on `search_images` validation images (as `revival demo`),
                      on SD the paper's preset of the task
    unlearn_steps     ConceptPrune's tau (None: 10 on the testbed, the task's preset on SD)
    defense           the defense of the defended stages (revival.defense; default resample)
    keep, magnitude, solver   the revival attack's settings (None: the attack's defaults)
    select_images, select_first_seed, select_prompts, classifier, classifier_path
                      how `revival_defended_attack` picks the strongest attacker: the highest
                      erased accuracy on these images (default: the demo's, 20 held-out images of
                      the concept from seed 1000; SD: a prompt CSV or "an image of a {concept}",
                      judged by the task's classifier)
    seed              seed of unlearning, attack and defense (the demo's 0)
    first_seed        seed of the first generated image when the runner gives none (image k of a
                      technique gets first_seed + k; the demo's held-out seeds start at 1000)
    inference_steps, guidance, device   sampler and placement (None: the model's defaults)
    cache_dir         where built releases are cached (None: ~/.cache/revival/eval-unlearn)

Unknown keys are refused (a misspelt setting would otherwise be silently ignored).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eval_unlearn.configs.base import BaseConfig

from revival.errors import RevivalError
from revival.story.stages import AFTER_ORIGINAL

STAGES = AFTER_ORIGINAL   # the techniques: every stage of the chain after the original
TASKS = ("objects", "artists", "nudity")


def default_cache_dir() -> Path:
    """~/.cache/revival/eval-unlearn (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "revival" / "eval-unlearn"


def _positive_int(name: str, v, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise RevivalError(f"the technique setting {name} must be an integer >= {minimum}, got {v!r}.")


def _number(name: str, v, low: float, high: float, *, open_low: bool = False) -> None:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) \
        and (v > low if open_low else v >= low) and v <= high
    if not ok:
        raise RevivalError(f"the technique setting {name} must be a number in "
                           f"{'(' if open_low else '['}{low}, {high}], got {v!r}.")


@dataclass(frozen=True)
class TechniqueConfig(BaseConfig):
    erase_concept: str = ""
    model: str = "testbed"
    task: str = "objects"
    skill_ratio: float | None = None
    target_erasure: float = 0.2
    search_images: int = 60
    unlearn_steps: int | None = None
    defense: str = "resample"
    keep: float | None = None
    magnitude: str | None = None
    solver: str | None = None
    select_images: int = 20
    select_first_seed: int = 1000
    select_prompts: str | None = None
    classifier: str | None = None
    classifier_path: str | None = None
    seed: int = 0
    first_seed: int = 1000
    inference_steps: int | None = None
    guidance: float | None = None
    device: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.erase_concept, str) or not self.erase_concept.strip():
            raise RevivalError("the technique config needs erase_concept (the concept to erase, e.g. 'sneaker').")
        if not isinstance(self.model, str) or not self.model:
            raise RevivalError("the technique setting model must be 'testbed' or a Stable Diffusion folder.")
        if self.task not in TASKS:
            raise RevivalError(f"the technique setting task must be one of {', '.join(TASKS)}, got {self.task!r}.")
        if self.is_testbed:
            from revival.testbed.text import CLASSES

            if self.task != "objects":
                raise RevivalError("on the testbed the eval-unlearn techniques run the object task; "
                                   "use `revival demo --task` for the styles and the attribute.")
            if self.erase_concept not in CLASSES:
                raise RevivalError(f"unknown concept {self.erase_concept!r}; the testbed knows: {', '.join(CLASSES)}.")
        else:
            folder = Path(self.model).expanduser()
            if not folder.is_dir():
                raise RevivalError(f"model folder not found: {self.model}; set model to 'testbed' or to a local "
                                   "Stable Diffusion pipeline folder.")
            if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
                raise RevivalError(f"{self.model} is not a diffusers pipeline folder (model_index.json and unet/ "
                                   "are needed); set model to such a folder or to 'testbed'.")
        if self.skill_ratio is not None:
            _number("skill_ratio", self.skill_ratio, 0.0, 1.0, open_low=True)
        _number("target_erasure", self.target_erasure, 0.0, 1.0)
        if self.keep is not None:
            _number("keep", self.keep, 0.0, 1.0, open_low=True)
        if self.guidance is not None:
            _number("guidance", self.guidance, 0.0, 100.0)
        for name in ("search_images", "select_images"):
            _positive_int(name, getattr(self, name))
        for name in ("seed", "first_seed", "select_first_seed"):
            _positive_int(name, getattr(self, name), 0)
        if self.unlearn_steps is not None:
            _positive_int("unlearn_steps", self.unlearn_steps)
        if self.inference_steps is not None:
            _positive_int("inference_steps", self.inference_steps)
        from revival.defense import DEFENSES

        if self.defense not in DEFENSES:
            raise RevivalError(f"the technique setting defense must be one of {', '.join(DEFENSES)}, "
                               f"got {self.defense!r}.")
        if self.select_prompts is not None and not Path(self.select_prompts).expanduser().is_file():
            raise RevivalError(f"select_prompts file not found: {self.select_prompts}.")
        self.attack_config()  # the attack's own checks (magnitude, solver)

    def attack_config(self):
        """The revival attack's settings (`revival.AttackConfig`): the attack's defaults, this seed."""
        from revival.attack.revive import AttackConfig

        given = {k: v for k, v in (("keep", self.keep), ("magnitude", self.magnitude), ("solver", self.solver))
                 if v is not None}
        return AttackConfig(seed=self.seed, **given)

    @property
    def is_testbed(self) -> bool:
        return self.model == "testbed"

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TechniqueConfig":
        """The config of a mapping; unknown keys are refused, naming the known ones."""
        if not isinstance(data, dict):
            raise RevivalError(f"the technique config must be a mapping, got {type(data).__name__}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise RevivalError(f"unknown technique setting {unknown[0]!r}; the settings are: {', '.join(known)}.")
        return cls(**data)
