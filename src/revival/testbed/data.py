"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx files, read with gzip + numpy)."""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from revival.errors import RevivalError

DATA_DIRS = ("/usr/share/datasets/fashion-mnist",)
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def data_dir() -> Path:
    """The Fashion-MNIST folder: $REVIVAL_FASHION_MNIST, else the Debian package's."""
    env = os.environ.get("REVIVAL_FASHION_MNIST")
    for d in ([env] if env else []) + list(DATA_DIRS):
        if Path(d, _FILES["test"][0]).is_file():
            return Path(d)
    raise RevivalError("Fashion-MNIST was not found: install the Debian package dataset-fashion-mnist "
                       "or set REVIVAL_FASHION_MNIST to a folder with its idx .gz files.")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RevivalError(f"{path} is not an unsigned-byte idx file.")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise RevivalError(f"{path} is truncated.")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RevivalError(f"{path} is truncated.")
    return data.reshape(dims)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N,1,28,28] floats in [0,1] -> [N,1,size,size] (antialiased bilinear), clamped to [0,1]."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0, 1)


def load_fashion_mnist(split: str = "train", size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N,1,size,size] float32 in [0,1] and labels [N] int64 (Fashion-MNIST class order).
    Each call returns tensors of its own (the caller may change them in place); the decoded and
    resized split is kept once a process, keyed by the files' paths, sizes and change times."""
    if split not in _FILES:
        raise RevivalError(f"split must be 'train' or 'test', got {split!r}.")
    d = data_dir()
    files = tuple(d / f for f in _FILES[split])
    key = (*((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files), int(size))
    x, y = _decoded(key)
    return x.clone(), y.clone()


@lru_cache(maxsize=2)
def _decoded(key) -> tuple[torch.Tensor, torch.Tensor]:
    (img_path, *_), (lab_path, *_), size = key
    img = _read_idx(Path(img_path))
    lab = _read_idx(Path(lab_path))
    x = torch.from_numpy(img.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(lab.astype(np.int64))
    return resize(x, size), y
