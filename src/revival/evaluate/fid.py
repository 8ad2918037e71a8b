"""Utility of a model's preserved outputs: FID and KID (torchmetrics) between generated images and
real images of the same classes, in the feature space of a given network.

On the testbed the features are the testbed classifier's penultimate layer (512-d) and the real
images are Fashion-MNIST's TEST split (never used for training the generator): the figures are
named "FID/KID (testbed-CNN features)" and are comparable only with each other, not with
Inception FIDs of other papers. For Stable Diffusion, pass any local feature network (e.g. an
Inception or CLIP image tower loaded from disk) and a folder of real images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from revival.errors import RevivalError


@dataclass(frozen=True)
class FeatureDistance:
    features: str           # what the features are, e.g. "testbed-CNN penultimate (512-d)"
    real: int               # number of real images
    generated: int          # number of generated images
    fid: float
    kid: float
    kid_std: float

    def to_dict(self) -> dict:
        return asdict(self)


class _Features(torch.nn.Module):
    """Wraps a feature function as the nn.Module torchmetrics expects ([N, C, H, W] -> [N, D])."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x).double()


def feature_distance(real: torch.Tensor, generated: torch.Tensor, features, *, name: str,
                     kid_subset: int | None = None, seed: int = 0) -> FeatureDistance:
    """FID and KID between `real` and `generated` images ([N, C, H, W] in [0, 1]) in the space of
    `features` (a function or module: images -> [N, D]). KID uses subsets of `kid_subset`
    images (default: min(100, smallest set)); its subset draws are seeded."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise RevivalError("FID/KID need the package torchmetrics (pip install torchmetrics).") from None
    if len(real) < 2 or len(generated) < 2:
        raise RevivalError("FID/KID need at least two real and two generated images.")
    module = _Features(features)
    shape = tuple(real.shape[1:])
    import warnings

    fid = FrechetInceptionDistance(feature=module, normalize=True, input_img_size=shape)
    subset = kid_subset or min(100, len(real), len(generated))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KID keeps every feature in memory: fine at these sizes
        kid = KernelInceptionDistance(feature=module, normalize=True, subset_size=subset, subsets=50)
    for metric in (fid, kid):
        metric.update(real.float(), real=True)
        metric.update(generated.float(), real=False)
    f = float(fid.compute())
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # KID draws its subsets from torch's global generator
    try:
        k_mean, k_std = kid.compute()
    finally:
        torch.random.set_rng_state(state)
    return FeatureDistance(name, len(real), len(generated), f, float(k_mean), float(k_std))


def classifier_features():
    """The testbed classifier's penultimate features (512-d) as a function of images."""
    from revival.testbed import CLASSIFIER_PATH
    from revival.testbed.classifier import load_classifier_weights
    from revival.testbed.data import resize

    model = load_classifier_weights(CLASSIFIER_PATH).eval()

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        x = resize(x, 16)
        return model.features((x - 0.286) / 0.353).flatten(1)

    return features


def real_test_images(classes, per_class: int, seed: int = 0) -> torch.Tensor:
    """`per_class` real Fashion-MNIST TEST images (16x16) of each class, drawn with `seed`."""
    from revival.testbed import CLASSES
    from revival.testbed.data import load_fashion_mnist

    x, y = load_fashion_mnist("test", 16)
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in classes:
        idx = (y == CLASSES.index(c)).nonzero().flatten()
        out.append(x[idx[torch.randperm(len(idx), generator=g)[:per_class]]])
    return torch.cat(out)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_real_images(folder, size: int, channels: int = 3, limit: int | None = None) -> torch.Tensor:
    """Real reference images from a local folder (PNG/JPEG/...; sorted by name), resized and
    centre-cropped to size x size, as [N, channels, size, size] floats in [0, 1]."""
    from pathlib import Path

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise RevivalError(f"the real-image folder {folder} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if len(files) < 2:
        raise RevivalError(f"{folder} holds fewer than two images (.png, .jpg, ...); FID needs more.")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB" if channels == 3 else "L")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.BICUBIC)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError):
            raise RevivalError(f"{p} is not a readable image.") from None
        t = torch.from_numpy(a)
        out.append(t.permute(2, 0, 1) if t.ndim == 3 else t[None])
    return torch.stack(out)


def clip_features(folder, device: str = "cpu"):
    """Image features of a local CLIP folder's vision tower (L2-normalised), as a function."""
    from revival.evaluate.clip_score import CLIPScorer

    scorer = CLIPScorer(folder, device)
    return lambda x: scorer.image_features(x.to(device)).cpu()


def utility(generated: torch.Tensor, real_folder, features: str = "testbed", *, clip_folder=None,
            device: str = "cpu", seed: int = 0) -> FeatureDistance:
    """FID/KID of `generated` images against the real images in `real_folder`, in the feature
    space of the testbed classifier ("testbed") or of a local CLIP vision tower ("clip")."""
    if features == "testbed":
        real = load_real_images(real_folder, 16, channels=1)
        fn, name = classifier_features(), "testbed-CNN penultimate (512-d)"
    elif features == "clip":
        if clip_folder is None:
            raise RevivalError("--fid-features clip needs a local CLIP folder (--fid-clip DIR).")
        size = generated.shape[-1]
        real = load_real_images(real_folder, size, channels=3)
        fn, name = clip_features(clip_folder, device), f"CLIP image embeddings ({clip_folder})"
    else:
        raise RevivalError(f"--fid-features must be 'testbed' or 'clip', got {features!r}.")
    if generated.shape[1] != real.shape[1]:
        generated = generated.mean(1, keepdim=True) if real.shape[1] == 1 else generated.expand(-1, 3, -1, -1)
    return feature_distance(real, generated.float(), fn, name=name, seed=seed)
