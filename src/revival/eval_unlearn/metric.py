"""`revival_concept_accuracy`: an eval-unlearn metric that runs offline.

The erased concept's accuracy on held-out prompts: the share of generated images of the concept
that the judge (the testbed classifier, or an SD classifier of `revival.evaluate`) classifies as
the concept, with its 95% Wilson interval. On a revived release it is the attack's success rate.

Config (`metric.config` of an eval-unlearn run config):

    concept      the concept (required)
    images       how many prompts of the concept (default 20, the demo's seeds_per_class)
    first_seed   the seed of the first (default 1000, the demo's held-out seeds), recorded in the
                 batch's metadata: revival's techniques give image i of a call the seed
                 first_seed + i (their config's first_seed), so the prompts come in one batch
    prompts      a prompt CSV (prompt, class, seed) whose first `images` rows of the concept are
                 used instead (their prompts; the technique seeds them as above)
    classifier, classifier_path   the judge (default "testbed"; SD objects: "imagenet")
    device       the judge's device (default CPU)

The prompts are `revival.evaluate.prompts.default_prompts`: for a testbed class its held-out
phrasings (never ConceptPrune's unlearning prompts), otherwise "an image of a {concept}".
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from eval_unlearn.configs.base import BaseConfig
from eval_unlearn.registry import register_metric
from eval_unlearn.types import Dataset, MetricResult

from revival.errors import RevivalError
from revival.eval_unlearn.techniques import refuse


@dataclass(frozen=True)
class ConceptAccuracyConfig(BaseConfig):
    concept: str = ""
    images: int = 20
    first_seed: int = 1000
    prompts: str | None = None
    classifier: str = "testbed"
    classifier_path: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.concept, str) or not self.concept.strip():
            raise RevivalError("the revival_concept_accuracy metric needs concept (e.g. 'sneaker').")
        for name, low in (("images", 1), ("first_seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise RevivalError(f"the metric setting {name} must be an integer >= {low}, got {v!r}.")
        if self.classifier == "testbed":
            from revival.testbed.text import CLASSES

            if self.concept not in CLASSES:
                raise RevivalError(f"unknown concept {self.concept!r}; the testbed knows: {', '.join(CLASSES)}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptAccuracyConfig":
        known = [f.name for f in fields(cls)]
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise RevivalError(f"unknown metric setting {unknown[0]!r}; the settings are: {', '.join(known)}.")
        return cls(**data)


@register_metric("revival_concept_accuracy")
class ConceptAccuracyMetric:
    """Erased-concept accuracy of generated images on held-out prompts (offline)."""

    def __init__(self, **kwargs):
        try:
            self.config = ConceptAccuracyConfig.from_dict(kwargs)
            self.rows = self._rows()
            from revival.evaluate.classifiers import get_classifier

            self.judge = get_classifier(self.config.classifier, device=self.config.device or "cpu",
                                        weights=self.config.classifier_path)
            labels = getattr(self.judge, "labels", None)
            if self.config.classifier in ("testbed", "imagenet", "resnet50") and labels \
                    and not any(self.judge.is_hit(label, self.config.concept) for label in labels):
                raise RevivalError(f"the {self.config.classifier} classifier has no class {self.config.concept!r}; "
                                   "give a concept it can name, or another classifier.")
        except RevivalError as exc:
            refuse(exc)
        self.outcomes: list[bool] = []
        self.predictions: list[str] = []

    def _rows(self):
        from revival.evaluate.prompts import default_prompts, read_prompts

        c = self.config
        if c.prompts is None:
            return default_prompts([c.concept], c.images, c.first_seed)
        rows = [r for r in read_prompts(c.prompts) if r.cls.lower() == c.concept.lower()][:c.images]
        if not rows:
            raise RevivalError(f"the prompt file {c.prompts} has no row of the concept {c.concept!r}.")
        return rows

    def load_dataset(self) -> list[Dataset]:
        """One batch: the concept's prompts, their seeds in the metadata."""
        self.outcomes, self.predictions = [], []
        seeds = [self.config.first_seed + i for i in range(len(self.rows))]
        return [Dataset(prompts=[r.prompt for r in self.rows],
                        metadata={"source": "revival held-out prompts", "seeds": seeds,
                                  "classes": [r.cls for r in self.rows]})]

    def update(self, images, prompts, metadata) -> None:
        import torch

        from revival.evaluate.generate import from_pil
        from revival.evaluate.prompts import PromptRow

        if len(images) != len(prompts):
            raise RevivalError(f"got {len(images)} images for {len(prompts)} prompts.")
        mode = "L" if self.config.classifier == "testbed" else "RGB"
        batch = torch.stack([from_pil(img.convert(mode)) for img in images])
        seeds = metadata.get("seeds") or [0] * len(prompts)
        rows = [PromptRow(i, p, self.config.concept, int(s)) for i, (p, s) in enumerate(zip(prompts, seeds))]
        preds, _ = self.judge.judge(batch, rows)
        self.predictions += list(preds)
        self.outcomes += [bool(self.judge.is_hit(p, self.config.concept)) for p in preds]

    def compute(self) -> MetricResult:
        from revival.intervals import Proportion

        p = Proportion(sum(self.outcomes), len(self.outcomes)).to_dict()
        return MetricResult(name="revival_concept_accuracy", value=p["value"],
                            details={"concept": self.config.concept, "hits": p["hits"], "n": p["n"],
                                     "ci95": p["ci95"], "classifier": self.config.classifier,
                                     "seeds": [self.config.first_seed + i for i in range(len(self.outcomes))],
                                     "predictions": self.predictions})
