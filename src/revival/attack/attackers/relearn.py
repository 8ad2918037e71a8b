"""The relearning attacker: fine-tune a released UNet on K real images of the erased concept for
S steps, the attack the unlearning field measures erasures against (a concept that comes back
after a few steps on a few images was hidden, not removed).

    budget = RelearnBudget(images=4, steps=50)
    state = relearn_state(model, release_state, "sneaker", budget, RelearnConfig(seed=0))

`model` is a loaded testbed pipeline or SD generator (`revival.model.loader.load_model`), in float32.
On the testbed the K images come from Fashion-MNIST's test split (no erasure trains on it); on
Stable Diffusion they are a local folder the user gives (`relearn_images`). The captions of each
step, the images of each batch, the timesteps and the noise are drawn from CPU generators seeded
from `config.seed`, so a run depends on its seed only. Every call starts from the given state:
the budgets of a curve share nothing, and the model's own UNet is restored afterwards.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from revival.concepts.images import SD_TEMPLATES, check_count, folder_images, image_files, testbed_images
from revival.model.denoise import Denoiser, finetune
from revival.errors import RevivalError

MAX_BATCH = 16


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RevivalError(f"the relearning {name} must be a positive integer, got {value!r}.")
    return value


@dataclass(frozen=True)
class RelearnBudget:
    """What the attacker spends: `images` real images of the concept (K), `steps` optimiser steps (S)."""

    images: int
    steps: int

    def __post_init__(self):
        _positive_int("images (K, --images)", self.images)
        _positive_int("steps (S, --steps)", self.steps)

    def to_dict(self) -> dict:
        return asdict(self)


# The default attack curve, cheapest first (images x steps grows along it).
RELEARN_BUDGETS = tuple(RelearnBudget(k, s) for k, s in ((1, 20), (4, 20), (4, 50), (16, 50), (16, 100)))


@dataclass(frozen=True)
class RelearnConfig:
    """Optimiser settings: AdamW learning rate, images per step (None: min(K, 16)), seed."""

    lr: float = 3e-4
    batch: int | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise RevivalError(f"the relearning learning rate (lr, --lr) must be a positive number, got {self.lr!r}.")
        if self.batch is not None:
            _positive_int("batch", self.batch)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RevivalError(f"the relearning seed must be an integer, got {self.seed!r}.")

    def batch_for(self, k: int) -> int:
        return min(k, MAX_BATCH if self.batch is None else self.batch)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- inputs

def check_images(model_is_testbed: bool, concept: str, k, folder: str | Path | None = None) -> None:
    """Refuse, before any training, K that is not a positive integer or larger than the images
    available, a folder with non-images, an unknown testbed class, or SD without a folder."""
    _positive_int("images (K, --images)", k)
    if model_is_testbed:
        from revival.testbed.text import CLASSES

        if concept not in CLASSES:
            raise RevivalError(f"unknown testbed class {concept!r}; the testbed knows: {', '.join(CLASSES)}.")
    elif folder is None:
        raise RevivalError("relearning a Stable Diffusion model needs real images of the concept: give "
                           "--image-folder (images=... in the API).")
    if not str(concept).strip():
        raise RevivalError("the concept to relearn is empty.")
    if folder is not None:
        check_count(k, len(image_files(folder)), f"the image folder {folder}")
    else:
        check_count(k, len(testbed_images(concept, None, "test")), f"Fashion-MNIST's test split for {concept!r}")


def relearn_images(model_is_testbed: bool, concept: str, k: int, folder: str | Path | None = None,
                   seed: int = 0, *, size: int | None = None) -> torch.Tensor:
    """The attacker's K images [K, C, size, size] in [0, 1]: testbed without a folder: Fashion-MNIST's
    test split (16 px); a folder: its images (`size`: the model's pixel size; default 16 on the
    testbed, 512 on SD). Bad input is refused (`check_images`) before any image is read."""
    check_images(model_is_testbed, concept, k, folder)
    if folder is None:
        return testbed_images(concept, k, "test", seed, size=size or 16)
    return folder_images(folder, k, seed, size=size or (16 if model_is_testbed else 512))


def default_captions(model_is_testbed: bool, concept: str) -> list[str]:
    """The testbed's training captions of the class, or SD_TEMPLATES filled with the concept."""
    if model_is_testbed:
        from revival.testbed.text import class_captions

        return class_captions(concept)
    return [t.format(concept) for t in SD_TEMPLATES]


def is_testbed(model) -> bool:
    """Whether `model` is the testbed pipeline (an SD generator carries its diffusers `pipe`)."""
    return getattr(model, "pipe", None) is None


def check_state(unet: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str = "the release") -> None:
    """Every tensor of `state` names a UNet tensor of the same shape (`revival.release.belongs`) and
    is finite; one sentence otherwise."""
    from revival.release.belongs import check_belongs

    check_belongs(unet.state_dict(), state, where)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise RevivalError(f"{where}'s tensor {k!r} contains NaN or infinite weights.")


# --------------------------------------------------------------------------- the attack

def relearn_state(model, state: Mapping[str, torch.Tensor], concept: str, budget: RelearnBudget,
                  config: RelearnConfig | None = None, *, images: torch.Tensor | None = None,
                  captions: list[str] | None = None, log: Callable[[str], None] | None = None,
                  losses: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Fine-tune `state` (the release, diffusers naming; tensors it lacks come from the model's
    UNet) on K = budget.images images of `concept` for budget.steps steps; returns the whole
    fine-tuned UNet state (detached clones, each with the device and dtype of `state`, else the
    UNet's). `images`: [K', C, H, W] in [0, 1], K' >= K (needed on SD; testbed default: the test
    split, picked by config.seed). `captions`: the prompts drawn per step (default:
    `default_captions`). `losses`, when given, receives the loss of every step. The model's own
    UNet weights are restored afterwards, whatever happens."""
    config = config or RelearnConfig()
    if not isinstance(budget, RelearnBudget):
        raise RevivalError(f"budget must be a RelearnBudget(images, steps), got {budget!r}.")
    testbed = is_testbed(model)
    unet = model.unet
    if next(unet.parameters()).dtype != torch.float32:
        raise RevivalError("relearning trains the UNet and needs it in float32; load the model with dtype='fp32'.")
    k = budget.images
    if images is None:
        if not testbed:
            raise RevivalError("relearning a Stable Diffusion model needs images of the concept (relearn_images).")
        images = relearn_images(True, concept, k, seed=config.seed)
    elif images.ndim != 4 or len(images) < k:
        raise RevivalError(f"the relearning budget takes {k} images but {tuple(images.shape)} were given.")
    images = images[:k]
    captions = list(captions) if captions is not None else default_captions(testbed, concept)
    if not captions:
        raise RevivalError("the relearning captions are empty.")
    check_state(unet, state)

    own = {n: t.detach().to("cpu", copy=True) for n, t in unet.state_dict().items()}
    grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    try:
        with torch.no_grad():
            params = unet.state_dict()
            for n, t in state.items():
                params[n].copy_(t.to(device=params[n].device, dtype=params[n].dtype))
        d = Denoiser(model)
        x0 = d.encode_images(images)
        states = d.encode_text(captions)
        batch = config.batch_for(k)
        pick = torch.Generator().manual_seed(int(config.seed))
        noise = torch.Generator().manual_seed(int(config.seed) + 1)

        def loss_at(step: int) -> torch.Tensor:
            idx = torch.randperm(k, generator=pick)[:batch]
            cap = torch.randint(len(captions), (batch,), generator=pick)
            return d.loss(unet, x0[idx.to(x0.device)], states[cap.to(states.device)], noise)

        steps = finetune(unet, loss_at, budget.steps, config.lr, log=log)
        if losses is not None:
            losses.extend(steps)
        out = {}
        for n, t in unet.state_dict().items():
            like = state.get(n, t)
            out[n] = t.detach().to(device=like.device, dtype=like.dtype, copy=True)
        return out
    finally:
        with torch.no_grad():
            params = unet.state_dict()
            for n, t in own.items():
                params[n].copy_(t)
        for n, p in unet.named_parameters():
            p.requires_grad_(grad[n])
