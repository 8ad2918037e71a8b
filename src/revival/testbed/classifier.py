"""The testbed classifier: a small CNN on Fashion-MNIST at the testbed's resolution (16x16).

Generated testbed images ([N,1,16,16] in [0,1]) go straight into it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RevivalError
from .data import load_fashion_mnist, resize


class FashionCNN(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                                      *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                                      *block(64, 128), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(512, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N,1,H,W] in [0,1] -> logits [N, n_classes]."""
        return self.head(self.features((x - 0.286) / 0.353))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild: random horizontal flip and a shift of up to one pixel."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    return x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def train_classifier(size: int = 16, epochs: int = 4, batch: int = 128, lr: float = 3e-3,
                     seed: int = 0, log=print) -> tuple[FashionCNN, float]:
    """Train on the 60k training images; returns (model in eval mode, test accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = load_fashion_mnist("train", size)
    model = FashionCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    t0, step = time.time(), 0
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(_augment(x[idx], gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        acc = test_accuracy(model, size)
        log(f"epoch {ep + 1}/{epochs} loss {loss.item():.3f} test acc {acc:.4f} {time.time() - t0:.0f}s")
    return model.eval(), acc


@torch.no_grad()
def test_accuracy(model: nn.Module, size: int = 16, limit: int | None = None) -> float:
    x, y = load_fashion_mnist("test", size)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    model.eval()
    pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def save_classifier(model: FashionCNN, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from ..io import atomic_write

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_classifier_weights(path: str | Path) -> FashionCNN:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise RevivalError(f"classifier weights not found: {path}.")
    model = FashionCNN()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


class TestbedClassifier:
    """Callable: images [N,1,H,W] in [0,1] -> predicted class names; `.classes` in label order."""

    def __init__(self, model: FashionCNN, classes: list[str], size: int = 16, device="cpu"):
        self.model, self.classes, self.size = model, list(classes), size
        self.device = torch.device(device)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().to(self.device)
        if images.shape[1] == 3:
            images = images.mean(1, keepdim=True)
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = resize(images, self.size)
        return torch.cat([self.model(images[i:i + 500]) for i in range(0, len(images), 500)])

    def predict_indices(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def __call__(self, images: torch.Tensor) -> list[str]:
        return [self.classes[i] for i in self.predict_indices(images).tolist()]
