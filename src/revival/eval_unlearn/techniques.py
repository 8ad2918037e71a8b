"""The four eval-unlearn techniques: one class a stage of `revival demo`, built from its config.

    revival_conceptprune      the ConceptPrune release
    revival_revived           the release revived by revival's attack
    revival_defended          the release defended (revival's default defense)
    revival_defended_attack   the defended release under the strongest attacker

They are registered by revival's package metadata (entry point group `eval_unlearn.techniques`),
so `eval-unlearn plugins` lists them and a run config names them:

    technique:
      name: revival_revived
      config: {erase_concept: sneaker, model: testbed}

`generate(prompts, seed)` returns PIL RGB images. Image i of a call has seed `base + i`, base =
the runner's seed or else the config's first_seed (1000: the first of the demo's held-out seeds),
as eval-unlearn's own free_run seeds them; so a metric that lists the demo's held-out prompts in
one batch (revival_concept_accuracy) measures exactly the images the demo measured, in a single
or a multi-metric run alike. Each image's noise comes from its own seed (`revival.model.loader`): it
does not depend on the batch.
"""
from __future__ import annotations

import sys
from typing import Any, List, Optional

from eval_unlearn.logging_utils import get_logger
from eval_unlearn.registry import register_technique

from revival.errors import RevivalError
from revival.eval_unlearn.config import TechniqueConfig
from revival.eval_unlearn.releases import build

logger = get_logger(__name__)


def refuse(exc: RevivalError):
    """Bad input: one sentence. Under `eval-unlearn run` (whose handler would log the exception
    with its traceback) the process exits with the sentence; elsewhere the RevivalError is raised."""
    if "eval_unlearn.cli" in sys.modules:
        raise SystemExit(f"revival: error: {exc}") from None
    raise exc


class RevivalTechnique:
    """One stage of the demo as an eval-unlearn technique (subclasses set `stage`)."""

    stage = ""

    def __init__(self, **kwargs):
        try:
            self.config = TechniqueConfig.from_dict(kwargs)
            built = build(self.stage, self.config, log=logger.info)
        except RevivalError as exc:
            refuse(exc)
        self.pipeline, self.info = built.pipeline, built.info

    def generate(self, prompts: List[str], seed: Optional[int] = None, **kwargs: Any) -> List[Any]:
        """PIL images of `prompts` (see the module docstring for their seeds).
        kwargs: num_inference_steps, guidance_scale (default: the config's, else the model's)."""
        from revival.evaluate.generate import to_pil

        try:
            unknown = sorted(set(kwargs) - {"num_inference_steps", "guidance_scale"})
            if unknown:
                raise RevivalError(f"unknown generation setting {unknown[0]!r}; revival's techniques take "
                                   "num_inference_steps and guidance_scale.")
            if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
                raise RevivalError("generate takes a list of prompt strings.")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
                raise RevivalError(f"the seed must be a non-negative integer, got {seed!r}.")
        except RevivalError as exc:
            refuse(exc)
        prompts = list(prompts)
        if not prompts:
            return []
        base = self.config.first_seed if seed is None else seed
        seeds = [base + i for i in range(len(prompts))]
        steps = kwargs.get("num_inference_steps", self.config.inference_steps)
        guidance = kwargs.get("guidance_scale", self.config.guidance)
        images = self.pipeline(prompts, seeds, steps=steps, guidance=guidance)
        return [to_pil(img).convert("RGB") for img in images]


@register_technique("revival_conceptprune")
class ConceptPruneRelease(RevivalTechnique):
    """The ConceptPrune release (testbed: the least skill ratio that erases, as `revival demo`)."""

    stage = "unlearned"


@register_technique("revival_revived")
class RevivedRelease(RevivalTechnique):
    """The ConceptPrune release revived by revival's attack (from the release alone)."""

    stage = "revived"


@register_technique("revival_defended")
class DefendedRelease(RevivalTechnique):
    """The ConceptPrune release defended by revival's default defense (resample)."""

    stage = "obfuscated"


@register_technique("revival_defended_attack")
class DefendedAttackedRelease(RevivalTechnique):
    """The defended release under the strongest of revival's attackers (the demo's stage 5)."""

    stage = "obfuscated_revived"


TECHNIQUES = {"revival_conceptprune": ConceptPruneRelease, "revival_revived": RevivedRelease,
              "revival_defended": DefendedRelease, "revival_defended_attack": DefendedAttackedRelease}
