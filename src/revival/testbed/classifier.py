"""The testbed classifier: a small CNN on Fashion-MNIST at the testbed's resolution (16x16).

Generated testbed images ([N,1,16,16] in [0,1]) go straight into it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from revival.errors import RevivalError
from revival.testbed import transforms as X
from revival.testbed.data import load_fashion_mnist, resize


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


NO_ITEM = "no item"   # the answer for an image that shows no item (noise, a blank, a broken model's output)
# Share of each rendering among the real training images: plain, each style, tagged.
RENDER_MIX = (0.5,) + (0.1,) * 4 + (0.1,)
NEGATIVES_PER_BATCH = 24


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild: random horizontal flip and a shift of up to one pixel."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return _shift(x, gen)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    return x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _renderings(n: int, gen: torch.Generator, mix=RENDER_MIX) -> torch.Tensor:
    """Per image a rendering kind of transforms.render (0 plain, 1..4 styles, 5 tagged)."""
    edges = torch.tensor(mix, dtype=torch.float64).cumsum(0)[:-1].float()
    return torch.bucketize(torch.rand(n, generator=gen), edges, right=True)


def negative_pool(size: int = 16, per_kind: int = 300, log=print) -> torch.Tensor:
    """Broken models' outputs to train "no item" on (revival.testbed.noise): random UNets of the
    training initialisation seeds, and both committed UNets with every ff.net.2 / ff.net.0.proj
    zeroed; seeds from noise.BROKEN_FIRST_SEED (disjoint from every evaluation)."""
    from revival.testbed import noise as N
    from revival.testbed.pipeline import TASKS_UNET_DIR, TESTBED_UNET_DIR, load_pipeline

    t0, out, seed = time.time(), [], N.BROKEN_FIRST_SEED
    for d in (TESTBED_UNET_DIR, TASKS_UNET_DIR):
        pipe = load_pipeline(d)
        kinds = [("zero-ff2", 0), ("zero-ff0", 0)] + ([("random-unet", s) for s in N.TRAIN_INIT_SEEDS]
                                                      if d == TASKS_UNET_DIR else [])
        for kind, init in kinds:
            out.append(N.broken_outputs(pipe, kind, per_kind, first_seed=seed, init_seed=init))
            seed += per_kind
    log(f"{sum(len(o) for o in out)} broken-model images in {time.time() - t0:.0f}s")
    return resize(torch.cat(out), size)


def negatives(n: int, pool: torch.Tensor, gen: torch.Generator, size: int = 16) -> torch.Tensor:
    """`n` "no item" training images: half synthetic noise of the training kinds, half drawn from
    `pool`; flipped and transposed at random, each rendered half the time in a random style or
    tagged, then shifted and rescaled."""
    from revival.testbed import noise as N

    k = n // 2
    kinds = torch.randint(0, len(N.TRAIN_KINDS), (k,), generator=gen).tolist()
    synth = torch.cat([N.noise_images(N.TRAIN_KINDS[i], 1, gen, size) for i in kinds]) if k else pool[:0]
    drawn = pool[torch.randint(0, len(pool), (n - k,), generator=gen)]
    x = torch.cat([synth, drawn])
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    turn = torch.rand(len(x), generator=gen) < 0.5   # noise has no orientation: transposed half the time
    x = torch.where(turn.view(-1, 1, 1, 1), x.transpose(-1, -2), x)
    x = X.render(x, _renderings(len(x), gen, (0.5,) + (0.1,) * 5))
    return _jitter(_shift(x, gen), gen)


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Contrast scale in [0.85, 1.15] and Gaussian pixel noise (sd 0.03): a generator's
    renderings are a little imperfect."""
    scale = 0.85 + 0.3 * torch.rand(x.shape[0], 1, 1, 1, generator=gen)
    return (x * scale + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def train_classifier(size: int = 16, epochs: int = 4, batch: int = 128, lr: float = 3e-3,
                     seed: int = 0, log=print, pool: torch.Tensor | None = None) -> tuple[FashionCNN, float]:
    """Train on the 60k training images, each rendered plain, in a style or tagged (RENDER_MIX),
    plus NEGATIVES_PER_BATCH "no item" images a batch (`negatives`; `pool`: the broken models'
    outputs, default `negative_pool()`). Returns (model in eval mode, plain test accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = load_fashion_mnist("train", size)
    pool = negative_pool(size, log=log) if pool is None else pool
    n_cls = int(y.max()) + 1
    model = FashionCNN(n_cls + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i:i + batch]
            raw = x[idx]
            flip = torch.rand(batch, generator=gen) < 0.5
            raw = torch.where(flip.view(-1, 1, 1, 1), raw.flip(-1), raw)
            real = X.render(raw, _renderings(batch, gen))
            real = torch.where((torch.rand(batch, generator=gen) < 0.5).view(-1, 1, 1, 1),
                               _jitter(real, gen), real)
            img = torch.cat([_shift(real, gen), negatives(NEGATIVES_PER_BATCH, pool, gen, size)])
            lab = torch.cat([y[idx], torch.full((NEGATIVES_PER_BATCH,), n_cls)])
            loss = F.cross_entropy(model(img), lab, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = test_accuracy(model, size)
        log(f"epoch {ep + 1}/{epochs} loss {loss.item():.3f} test acc {acc:.4f} {time.time() - t0:.0f}s")
    return model.eval(), acc


@torch.no_grad()
def test_accuracy(model: nn.Module, size: int = 16, limit: int | None = None) -> float:
    """Accuracy on the real (plain) test images; a "no item" answer counts as wrong."""
    x, y = load_fashion_mnist("test", size)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    model.eval()
    pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


@torch.no_grad()
def judge_report(model: nn.Module, size: int = 16, per_kind: int = 400, seed: int = 1) -> dict:
    """What the classifier does with each kind of image: accuracy on the real test images plain,
    in each style and tagged (and their "no item" rate), and the "no item" rate on the noise
    kinds (training and held-out ones, fresh draws from `seed`)."""
    from revival.testbed import noise as N

    model.eval()
    x, y = load_fashion_mnist("test", size)
    pred = lambda im: torch.cat([model(im[i:i + 1000]).argmax(1) for i in range(0, len(im), 1000)])
    none = model.head[-1].out_features - 1
    out = {"real": {}, "noise": {}}
    for k, name in enumerate(("plain",) + X.STYLES + (X.ATTRIBUTE,)):
        p = pred(X.render(x, torch.full((len(x),), k)))
        out["real"][name] = {"accuracy": (p == y).float().mean().item(), "no_item": (p == none).float().mean().item()}
    gen = torch.Generator().manual_seed(seed)
    for kind in N.TRAIN_KINDS + N.HELD_OUT_KINDS:
        im = N.noise_images(kind, per_kind, gen, size)
        rendered = X.render(im, _renderings(per_kind, gen, (0.5,) + (0.1,) * 5))
        out["noise"][kind] = {"no_item": (pred(im) == none).float().mean().item(),
                              "no_item_rendered": (pred(rendered) == none).float().mean().item(),
                              "held_out": kind in N.HELD_OUT_KINDS}
    return out


def save_classifier(model: FashionCNN, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from revival.io import atomic_write

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_classifier_weights(path: str | Path) -> FashionCNN:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise RevivalError(f"classifier weights not found: {path}.")
    state = load_file(str(path))
    head = state.get("head.2.weight")
    model = FashionCNN(10 if head is None else head.shape[0])
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise RevivalError(f"{path} is not a testbed classifier's weights.") from None
    return model.eval()


class TestbedClassifier:
    """Callable: images [N,1,H,W] in [0,1] -> predicted class names, or NO_ITEM for an image that
    shows no item (a model with one output more than `classes`); `.classes` in label order
    (NO_ITEM last where the model has it)."""

    def __init__(self, model: FashionCNN, classes: list[str], size: int = 16, device="cpu"):
        classes = list(classes)
        if model.head[-1].out_features == len(classes) + 1:
            classes.append(NO_ITEM)
        self.model, self.classes, self.size = model, classes, size
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
