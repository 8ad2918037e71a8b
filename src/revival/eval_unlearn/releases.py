"""The four stages of `revival demo` after the original (the chain of `revival.story.stages`) as
releases, each built once and cached by content. Names are the chain's; `build` also takes their
aliases (release, defended, defended_attack).

    unlearned           ConceptPrune (testbed: `revival.unlearn.least_damage`, the least skill ratio
                        whose erased accuracy on validation images is at most target_erasure, as the
                        demo; SD: the paper's preset of the task)
    revived             revival's attack on the release (`revival.revive`, the demo's stage 3)
    obfuscated          the release defended (`revival.defense.apply_defense`, the demo's stage 4)
    obfuscated_revived  every attacker against the defended release, the strongest kept
                        (`revival.story.stages.make_obfuscated_revived`, the demo's stage 5)

Every stage is the same function of the same inputs as in the demo, so the same model, concept
and settings give the demo's weights. A stage is stored as the layers it changes (safetensors,
written atomically) under the cache folder, named by a sha256 of everything that determines it:
the model's UNet weights (`revival.runtime.digest.unet_digest`), the concept, the settings, the seed, the
parent stage's key and revival's version. A stored stage is read back instead of rebuilt.

    >>> built = build("revived", TechniqueConfig(erase_concept="sneaker"))
    >>> images = built.pipeline(["catalog photo of trainers"], [1000])
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from revival.errors import RevivalError
from revival.eval_unlearn.config import STAGES, TechniqueConfig
from revival.story.stages import canonical, make_obfuscated, make_revived, make_unlearned

CACHE_FORMAT = 1
_logger = logging.getLogger("revival.eval_unlearn")


@dataclass
class Built:
    """A stage ready to generate: `pipeline` has the stage's UNet loaded; `info` says what the
    stage is (skill ratio, layers, strongest attacker, ...), its cache file and whether it was read."""

    stage: str
    pipeline: Any
    info: dict


def build(stage: str, config: TechniqueConfig, log: Callable[[str], None] | None = None) -> Built:
    """The stage `stage` (one of STAGES) of `config`, built or read from the cache."""
    stage = canonical(stage, STAGES)
    stages = _Stages(config, log or _logger.info)
    updates, info = stages.get(stage)
    stages.pipe.unet.load_state_dict({**stages.original, **updates})
    return Built(stage, stages.pipe, info)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "concept"


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class _Stages:
    """The model, its weights, the concept's prompts and settings; stages memoised by name."""

    def __init__(self, config: TechniqueConfig, log: Callable[[str], None]):
        from revival import __version__
        from revival.model.loader import load_model
        from revival.runtime.digest import unet_digest
        from revival.unlearn.conceptprune import PRESETS, ConceptPruneConfig, task_prompts, testbed_task_prompts

        self.config, self.log = config, log
        # the settings first (bad ones are refused before the model is loaded)
        if config.is_testbed:
            from revival.testbed.text import CLASSES

            self.prompts = testbed_task_prompts("objects", config.erase_concept, CLASSES)
            ratio, steps = 0.05, 10   # the demo's (the ratio is searched unless given)
        else:
            self.prompts = task_prompts(config.task, config.erase_concept)
            ratio, steps = PRESETS[config.task]
        self.search = config.is_testbed and config.skill_ratio is None
        self.cp = ConceptPruneConfig(skill_ratio=config.skill_ratio or ratio, steps=config.unlearn_steps or steps,
                                     seed=config.seed, inference_steps=config.inference_steps,
                                     guidance=config.guidance, halves="both")
        self.attack = config.attack_config()
        model = config.model if config.is_testbed else str(Path(config.model).expanduser())
        log(f"revival: loading {model}")
        self.pipe = load_model(model, device=config.device)
        self.original = {k: v.detach().clone() for k, v in self.pipe.unet.state_dict().items()}
        self.root = {"format": CACHE_FORMAT, "revival": __version__, "model": unet_digest(self.original),
                     "dtype": str(self.pipe.dtype), "device": torch.device(self.pipe.device).type,
                     "concept": config.erase_concept, "task": config.task}
        self.memo: dict[str, tuple[str, dict, dict]] = {}

    # ----------------------------------------------------------------- cache

    def get(self, stage: str) -> tuple[dict[str, torch.Tensor], dict]:
        """(changed layers vs. the model, info) of a stage; info["key"] is its cache key."""
        if stage not in self.memo:
            parent, own, make = {"unlearned": self._release, "revived": self._revived, "obfuscated": self._defended,
                                 "obfuscated_revived": self._defended_attack}[stage]()
            key = _hash({"stage": stage, "parent": self.get(parent)[1]["key"] if parent else self.root, **own})
            self.memo[stage] = self._cached(stage, key, make)
        return self.memo[stage][1], self.memo[stage][2]

    def _cached(self, stage: str, key: str, make) -> tuple[str, dict, dict]:
        from safetensors import safe_open
        from safetensors.torch import save_file

        from revival.io import atomic_write, jsonable

        folder = self.config.cache_path
        path = folder / f"{stage}-{_slug(self.config.erase_concept)}-{key[:24]}.safetensors"
        if path.is_file():
            try:
                with safe_open(str(path), "pt") as f:
                    info = json.loads((f.metadata() or {})["revival"])
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                if info.get("key") == key and all(k in self.original for k in tensors):
                    self.log(f"revival: {stage} read from the cache ({path})")
                    own = self.original
                    updates = {k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in tensors.items()}
                    return key, updates, {**info, "cache": str(path), "cached": True}
            except Exception:  # an unreadable or foreign file: rebuilt and replaced below
                self.log(f"revival: the cache file {path} is unreadable; rebuilding it")
        self.log(f"revival: building the {stage} stage of {self.config.erase_concept!r}")
        updates, info = make()
        info = jsonable({**info, "stage": stage, "key": key})
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RevivalError(f"cannot create the cache folder {folder} ({exc.strerror}); "
                               "set cache_dir to a writable folder.") from None
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in updates.items()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"revival": json.dumps(info)}))
        return key, updates, {**info, "cache": str(path), "cached": False}

    # ----------------------------------------------------------------- stages: (parent, own key material, make)

    def _release(self):
        from revival.unlearn.conceptprune import concept_statistics

        c = self.config
        own = {"conceptprune": asdict(self.cp), "prompts": self.prompts,
               "search": {"target_erasure": c.target_erasure, "images": c.search_images} if self.search else None}

        def make():
            stats = concept_statistics(self.pipe, *self.prompts, self.cp)
            cp, search = self.cp, None
            if self.search:
                from revival.unlearn.least_damage import least_damage
                from revival.unlearn.run import testbed_erased_fn

                erased_fn = testbed_erased_fn(self.pipe, c.erase_concept, c.search_images, cp)
                search = least_damage(stats, cp, erased_fn, c.target_erasure, progress=self.log)
                cp = replace(cp, skill_ratio=search.skill_ratio)
            masks, result = stats.masks(cp)
            updates = self._changed(make_unlearned(self.original, masks))
            self.log(f"revival: pruned {result.pruned} of {result.total} weights (skill ratio {cp.skill_ratio:.4g})")
            return updates, {"skill_ratio": cp.skill_ratio, "steps": cp.steps, "layers": sorted(masks),
                             "pruned": result.pruned, "total": result.total,
                             "least_damage": search.to_dict() if search else None}
        return None, own, make

    def _unlearned(self) -> tuple[dict, dict]:
        rel, info = self.get("unlearned")
        return {**self.original, **rel}, info

    def _revived(self):

        def make():
            unlearned, rinfo = self._unlearned()
            state, result = make_revived(unlearned, rinfo["layers"], self.attack)
            totals = result.to_dict()["totals"]
            return self._changed(state), {
                "layers": rinfo["layers"], "skill_ratio": rinfo["skill_ratio"], "attack": asdict(self.attack),
                "revived": totals["kept"], "pruned": totals["pruned"]}
        return "unlearned", {"attack": asdict(self.attack)}, make

    def _defended(self):

        c = self.config

        def make():
            unlearned, rinfo = self._unlearned()
            from revival.runtime.seeding import research_defense_seed

            state, result = make_obfuscated(unlearned, rinfo["layers"], c.defense, research_defense_seed(c.seed),
                                            stats="row")
            return self._changed(state), {
                "layers": rinfo["layers"], "skill_ratio": rinfo["skill_ratio"], "defense": c.defense,
                "filled": getattr(result, "pruned", None)}
        return "unlearned", {"defense": c.defense, "seed": c.seed, "stats": "row"}, make

    def _defended_attack(self):
        from revival.attack.attackers import ATTACKERS
        from revival.story.stages import make_obfuscated_revived  # (the ladder: imported when asked for)

        rows, clf_name = self._selection_rows()
        c = self.config
        own = {"attack": asdict(self.attack), "attackers": list(ATTACKERS), "classifier": clf_name,
               "classifier_path": c.classifier_path, "rows": [(r.prompt, r.cls, r.seed) for r in rows],
               "inference_steps": c.inference_steps, "guidance": c.guidance,
               "scope": "audit_layers"}   # the attacked layers: the changed ones and their partners

        def make():
            from revival.evaluate.classifiers import get_classifier
            from revival.evaluate.evaluate import evaluate_concept

            unlearned, rinfo = self._unlearned()
            d_updates, dinfo = self.get("obfuscated")
            layers = rinfo["layers"]
            defended = {**self.original, **d_updates}
            clf = get_classifier(clf_name, device=str(torch.device(self.pipe.device)), weights=c.classifier_path)

            def measure(state):
                self.pipe.unet.load_state_dict(state)
                res = evaluate_concept(self.pipe, rows, clf, c.erase_concept, steps=c.inference_steps,
                                       guidance=c.guidance)
                # the concept's rows only: no preserved figure (nan: the demo formats it)
                p = res.preserved_accuracy
                return res.erased_accuracy, math.nan if p is None else p

            cp = replace(self.cp, skill_ratio=min(1.0, rinfo["skill_ratio"]))
            try:
                state, _, facts = make_obfuscated_revived(self.pipe, defended, self.original,
                                                   self.prompts, cp, self.attack, measure, False)
            finally:
                self.pipe.unet.load_state_dict(self.original)
            attackers = {name: {k: (None if isinstance(f[k], float) and math.isnan(f[k]) else f[k])
                                for k in ("status", "reason", "erased", "preserved", "located") if k in f}
                         for name, f in facts["attackers"].items()}
            self.log(f"revival: the strongest attacker of the defended release: {facts['strongest']}")
            # every tensor the defense and the attacker changed (they may touch more than `layers`:
            # the partner ff.net.0.proj rows, the projection bias)
            return self._changed(state), {
                "layers": layers, "skill_ratio": rinfo["skill_ratio"], "defense": c.defense,
                "strongest": facts["strongest"], "attackers": attackers,
                "selection": {"classifier": clf_name, "images": len(rows), "first_seed": rows[0].seed}}
        return "obfuscated", own, make

    def _changed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of `state` that differ from the model's own."""
        own = self.original
        return {k: v for k, v in state.items() if k not in own or not torch.equal(v.to(own[k].device), own[k])}

    def _selection_rows(self):
        """The rows that pick the strongest attacker, and the classifier's name."""
        from revival.evaluate.prompts import default_prompts, read_prompts

        c = self.config
        clf = c.classifier or ("testbed" if c.is_testbed else
                               {"objects": "imagenet", "nudity": "nudenet", "artists": "clip"}[c.task])
        if c.select_prompts is None:
            return default_prompts([c.erase_concept], c.select_images, c.select_first_seed), clf
        rows = read_prompts(c.select_prompts, default_class="nudity" if c.task == "nudity" else None)
        rows = [r for r in rows if r.cls.lower() == c.erase_concept.lower()]
        if not rows:
            raise RevivalError(f"select_prompts {c.select_prompts} has no row of the concept {c.erase_concept!r}.")
        return rows, clf
