"""Detectors of the testbed's style and attribute tasks (the CLIP-similarity and NudeNet analogues).

Two small CNNs (the testbed classifier's architecture, `classifier.FashionCNN`) trained on
*real* Fashion-MNIST training images rendered by `transforms` -- never on generated images --
and measured on the rendered real test images:

* the style detector: which style an image is drawn in, or "none" (labels STYLE_LABELS);
* the attribute detector: whether the image carries the tag ("tagged") or not ("none").

Training augmentation (seeded): a horizontal flip of the raw image before rendering (the tag is
drawn after it, so it stays in the top-left corner, as in the testbed's training), a shift of up
to one pixel, a contrast scale in [0.85, 1.15] and Gaussian pixel noise (sd 0.04), so that the
slightly imperfect renderings of a generator are still read.

A style or the tag counts only on an image whose item is recognisable: each detector is gated
by the testbed classifier (`TestbedCNN`, trained across the styles and the tag with a "no item"
class, `classifier.train_classifier`); where it answers NO_ITEM, so does the detector. Without
that, uniform noise read as "Kessler" and striped noise as "Orsolo" 400 times out of 400.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from revival.errors import RevivalError
from revival.evaluate.base import NO_ITEM, Classifier, _norm
from revival.testbed import transforms as X
from revival.testbed.classifier import FashionCNN
from revival.testbed.data import load_fashion_mnist, resize

STYLE_LABELS = [X.NO_STYLE] + list(X.STYLES)
ATTRIBUTE_LABELS = [X.NO_STYLE, X.ATTRIBUTE]
KINDS = {"style": STYLE_LABELS, "attribute": ATTRIBUTE_LABELS}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DETECTOR_PATHS = {k: WEIGHTS_DIR / f"{k}_detector.safetensors" for k in KINDS}
RESOLUTION = 16


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RevivalError(f"detector kind must be one of {', '.join(KINDS)}, got {kind!r}.")


def render_labels(x: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Real images [N,1,H,W] in [0,1] rendered as their detector labels say."""
    _check_kind(kind)
    if kind == "style":
        return X.render(x, labels)                      # 0 none, 1..4 the styles
    return X.render(x, labels * (len(X.STYLES) + 1))    # 0 none, 1 tagged


def _augment_raw(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _augment_rendered(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    x = x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    scale = 0.85 + 0.3 * torch.rand(x.shape[0], 1, 1, 1, generator=gen)
    noise = 0.04 * torch.randn(x.shape, generator=gen)
    return (x * scale + noise).clamp(0, 1)


def train_detector(kind: str, *, epochs: int = 2, batch: int = 128, lr: float = 3e-3, seed: int = 0,
                   log=print) -> tuple[FashionCNN, dict]:
    """Train one detector on rendered real training images; returns (model, test accuracies)."""
    _check_kind(kind)
    labels = KINDS[kind]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, _ = load_fashion_mnist("train", RESOLUTION)
    model = FashionCNN(len(labels))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i:i + batch]
            lab = torch.randint(0, len(labels), (batch,), generator=gen)
            img = _augment_rendered(render_labels(_augment_raw(x[idx], gen), lab, kind), gen)
            loss = F.cross_entropy(model(img), lab, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = test_accuracy(model, kind)
        log(f"{kind} detector epoch {ep + 1}/{epochs} loss {loss.item():.3f} test acc "
            f"{acc['overall']:.4f} {time.time() - t0:.0f}s")
    return model.eval(), acc


@torch.no_grad()
def test_accuracy(model: FashionCNN, kind: str, limit: int | None = None) -> dict:
    """Accuracy on the 10k real test images rendered with every label (per label and overall)."""
    _check_kind(kind)
    x, _ = load_fashion_mnist("test", RESOLUTION)
    if limit is not None:
        x = x[:limit]
    model.eval()
    out = {}
    for k, name in enumerate(KINDS[kind]):
        img = render_labels(x, torch.full((len(x),), k), kind)
        pred = torch.cat([model(img[i:i + 1000]).argmax(1) for i in range(0, len(img), 1000)])
        out[name] = (pred == k).float().mean().item()
    out["overall"] = sum(out.values()) / len(KINDS[kind])
    out["images_per_label"] = len(x)
    return out


def save_detector(model: FashionCNN, kind: str, path: str | Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    from revival.io import atomic_write

    _check_kind(kind)
    meta = {"kind": kind, "labels": ",".join(KINDS[kind]), **metadata}
    atomic_write(Path(path), save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta),
                 overwrite=True)


def load_detector_weights(kind: str, path: str | Path | None = None) -> FashionCNN:
    from safetensors.torch import load_file

    _check_kind(kind)
    path = Path(path) if path is not None else DETECTOR_PATHS[kind]
    if not path.is_file():
        raise RevivalError(f"{kind} detector weights not found: {path}.")
    model = FashionCNN(len(KINDS[kind]))
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # safetensors' own error type, or a state dict of another network
        raise RevivalError(f"{path} is not a {kind} detector of the testbed ({type(exc).__name__}).") from None
    return model.eval()


class TestbedCNN(Classifier):
    """The testbed classifier as an evaluation classifier ("testbed"): item names, or NO_ITEM for
    an image that shows no item; a hit when the name equals the row's class."""

    name = "testbed"

    def __init__(self, path: str | Path | None = None, device: str = "cpu"):
        from revival.testbed import CLASSES, CLASSIFIER_PATH
        from revival.testbed.classifier import TestbedClassifier, load_classifier_weights

        device = "cpu" if device is None else str(device)
        self._clf = TestbedClassifier(load_classifier_weights(path or CLASSIFIER_PATH).to(device), CLASSES,
                                      device=device)
        self.labels = list(CLASSES)
        self.device = device

    @property
    def rejects(self) -> bool:
        """Whether the weights have a "no item" answer."""
        return NO_ITEM in self._clf.classes

    def predict(self, images: torch.Tensor) -> list[str]:
        return self._clf(images.to(self.device))

    def fingerprint(self) -> str:
        """Its name, labels, device and weights' digest (the evaluation memo's key)."""
        from revival.runtime.digest import module_digest

        return repr((self.name, self.labels, list(self._clf.classes), self._clf.size, self.device,
                     module_digest(self._clf.model)))


class TestbedDetector(Classifier):
    """Callable: images [N,C,H,W] in [0,1] -> label names (style or "none"; "tagged" or "none"),
    or NO_ITEM where the item classifier (`item`, default the committed testbed classifier) sees
    no item. As an evaluation classifier ("testbed-style", "testbed-attribute"): a hit when the
    label equals the row's class (the style's name, or "tagged")."""

    def __init__(self, kind: str, path: str | Path | None = None, device: str = "cpu",
                 item: TestbedCNN | None = None):
        device = "cpu" if device is None else str(device)
        self.kind = kind
        self.name = f"testbed-{kind}"
        self.model = load_detector_weights(kind, path).to(device)
        self.labels = list(KINDS[kind])
        self.device = device
        self.item = item if item is not None else TestbedCNN(device=device)

    def knows(self, concept: str) -> bool:
        return _norm(concept) in {_norm(l) for l in self.labels if l != X.NO_STYLE}

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().to(self.device)
        if images.shape[1] == 3:
            images = images.mean(1, keepdim=True)
        if images.shape[-1] != RESOLUTION or images.shape[-2] != RESOLUTION:
            images = resize(images, RESOLUTION)
        return torch.cat([self.model(images[i:i + 500]) for i in range(0, len(images), 500)]).cpu()

    def predict(self, images: torch.Tensor) -> list[str]:
        labels = [self.labels[i] for i in self.logits(images).argmax(1).tolist()]
        items = self.item.predict(images)
        return [NO_ITEM if it == NO_ITEM else l for l, it in zip(labels, items)]

    def fingerprint(self) -> str:
        """Its kind, labels, device, weights' digest and its item classifier's (the evaluation memo's key)."""
        from revival.runtime.digest import module_digest

        return repr((self.name, self.labels, self.device, module_digest(self.model), self.item.fingerprint()))


def train_and_save(kind: str, out: str | Path, *, seed: int = 0, epochs: int = 2, log=print) -> dict:
    """`revival testbed detector`: train, measure on the rendered real test images, save."""
    t0 = time.time()
    model, acc = train_detector(kind, epochs=epochs, seed=seed, log=log)
    sec = time.time() - t0
    import json

    save_detector(model, kind, out, {"seed": str(seed), "epochs": str(epochs), "resolution": str(RESOLUTION),
                                     "train_seconds": f"{sec:.0f}", "test_accuracy": json.dumps(acc)})
    return acc


def cli(args) -> int:
    out = Path(args.out or f"testbed-weights/{args.kind}_detector.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    acc = train_and_save(args.kind, out, seed=args.seed, epochs=args.epochs)
    print(f"{args.kind} detector: test accuracy {acc['overall']:.4f} "
          f"({', '.join(f'{k} {v:.4f}' for k, v in acc.items() if k not in ('overall', 'images_per_label'))}) -> {out}")
    return 0
