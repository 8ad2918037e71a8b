"""Real images of a concept, for training: what the relearning attacker fine-tunes on and what a
fine-tuning erasure keeps (retain data) or maps to (an anchor).

    testbed_images(cls, k, split="test", seed=0)   Fashion-MNIST images of a testbed class
    folder_images(folder, k=None, seed=0)          every PNG/JPEG/WebP/BMP in a folder (SD path)

On the testbed the attacker's images come from Fashion-MNIST's *test* split and the erasures'
from the *train* split, so the two never share an image; evaluation draws generated images only.
Which k images are taken depends on the seed alone (a permutation of the candidates).
"""
from __future__ import annotations

from pathlib import Path

import torch

from revival.errors import RevivalError

# Captions of a Stable Diffusion concept's images (the relearning attacker's, and the fine-tuning
# erasures' own images of the concept); the paper's evaluation prompt sets are other prompts.
SD_TEMPLATES = ("a photo of a {}", "an image of a {}", "a picture of a {}", "a close-up photo of a {}",
                "a photograph of a {}", "a {} on a plain background", "a good photo of a {}", "{}")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _pick(n: int, k: int | None, seed: int) -> torch.Tensor:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return order if k is None else order[:k]


def check_count(k, available: int, where: str) -> int:
    """k as a positive integer no larger than what `where` holds, else one clear error."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RevivalError(f"the number of images must be a positive integer, got {k!r}.")
    if k > available:
        raise RevivalError(f"{k} images were asked for but {where} holds only {available}.")
    return k


def testbed_images(cls: str, k: int | None = None, split: str = "test", seed: int = 0,
                   size: int = 16) -> torch.Tensor:
    """[k, 1, size, size] Fashion-MNIST images of class `cls` in [0, 1] (all of them for k None)."""
    return testbed_class_images([cls], k, split, seed, size)[0]


def testbed_class_images(classes, k: int | None = None, split: str = "test", seed: int = 0,
                         size: int = 16) -> list[torch.Tensor]:
    """`testbed_images` of each class, the split read once."""
    from revival.testbed.data import load_fashion_mnist
    from revival.testbed.text import CLASSES

    for cls in classes:
        if cls not in CLASSES:
            raise RevivalError(f"unknown testbed class {cls!r}; the testbed knows: {', '.join(CLASSES)}.")
    x, y = load_fashion_mnist(split, size)
    out = []
    for cls in classes:
        xc = x[y == CLASSES.index(cls)]
        if k is not None:
            check_count(k, len(xc), f"Fashion-MNIST's {split} split for {cls!r}")
        out.append(xc[_pick(len(xc), k, seed)])
    return out


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (sorted), refusing a missing or empty folder and non-images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RevivalError(f"the image folder {folder} does not exist or is not a folder.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    bad = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise RevivalError(f"the image folder {folder} holds files that are not images (e.g. {bad[0]!r}); "
                           f"keep only {', '.join(IMAGE_SUFFIXES)} files there.")
    if not files:
        raise RevivalError(f"the image folder {folder} holds no images.")
    return files


def folder_images(folder: str | Path, k: int | None = None, seed: int = 0, size: int = 512) -> torch.Tensor:
    """[k, 3, size, size] images of a folder in [0, 1] (RGB, centre-cropped, resized); every file
    is opened and checked before any is used."""
    from PIL import Image

    files = image_files(folder)
    if k is not None:
        check_count(k, len(files), f"the image folder {folder}")
    picked = [files[i] for i in _pick(len(files), k, seed).tolist()]
    out = []
    for p in picked:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                s = min(im.size)
                left, top = (im.width - s) // 2, (im.height - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
                data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        except (OSError, ValueError) as exc:
            raise RevivalError(f"{p} is not a readable image ({exc}).") from None
        out.append(data.view(size, size, 3).permute(2, 0, 1).float() / 255)
    return torch.stack(out)
