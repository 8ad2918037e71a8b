"""The paper's object classifier: ResNet-50 in torchvision's layout, from a local weights file.

torchvision itself cannot be installed beside this project's torch build, so the network is
written here (ResNet v1.5: the stride sits in each bottleneck's 3x3 convolution) with
torchvision's parameter names, and reads torchvision's ImageNet checkpoint as it is saved
(`resnet50-0676ba61.pth`, `resnet50-11ad3fa6.pth`, or the same tensors as .safetensors) with
torch.load(weights_only=True). Preprocessing as torchvision's ImageNet evaluation: shortest side
to 256 (bilinear, antialiased), centre crop 224, ImageNet mean / std. Labels and the hit rule as
the "imagenet" classifier.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from revival.errors import RevivalError
from revival.evaluate.base import SynonymClassifier, imagenet_labels, resize_crop_normalize
from revival.evaluate.imagenet import ImageNetEfficientNet


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or inplanes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 with torchvision's module names (conv1, bn1, layer1..4, fc)."""

    def __init__(self, num_classes: int = 1000, depths=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(inplanes, planes, stride=2 if (j == 0 and i > 0) else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights only; an optional 'state_dict' /
    'model' wrapper and a 'module.' prefix are unwrapped)."""
    if not path.is_file():
        raise RevivalError(f"ResNet-50 weights not found: {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a junk or truncated file: each loader raises its own type
        raise RevivalError(f"cannot read ResNet-50 weights from {path}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RevivalError(f"{path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


class TorchvisionResNet50(SynonymClassifier):
    name = "resnet50"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        if weights is None:
            raise RevivalError("the resnet50 classifier needs a local weights file (--classifier-path FILE), "
                               "e.g. torchvision's resnet50-0676ba61.pth.")
        state = load_state(Path(weights))
        model = ResNet50(num_classes=state["fc.weight"].shape[0] if "fc.weight" in state else 1000)
        expected = model.state_dict()
        missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in expected]
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise RevivalError(f"{weights} is not a torchvision ResNet-50 state dict ({len(missing)} missing, "
                               f"{len(unexpected)} unexpected, {len(wrong)} misshapen tensors, "
                               f"e.g. {(wrong + missing + unexpected)[0]!r}).")
        model.load_state_dict(state, strict=False)
        self.model = model.eval().to(device)
        labels = imagenet_labels()
        self.labels = labels if model.fc.out_features == len(labels) else [str(i) for i in range(model.fc.out_features)]
        self.device = device

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_crop_normalize(images, 256, 224, ImageNetEfficientNet.MEAN, ImageNetEfficientNet.STD,
                                  mode="bilinear")
        return torch.cat([self.model(x[i:i + 32].to(self.device)) for i in range(0, len(x), 32)])
