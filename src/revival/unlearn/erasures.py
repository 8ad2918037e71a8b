"""Erasures that fine-tune the UNet (anchor, ESD, robust): their registry, settings and data.

A member is registered in its own file::

    @ERASURES.register("anchor", "the concept's captions learn an anchor's images; retain data kept")
    def anchor(model, data: ErasureData, config: ErasureConfig, log) -> dict: ...

It trains `model.unet` in place (`revival.model.denoise`) and returns what its report should say. The
orchestration (`revival.unlearn.run.erase`) loads the model, builds the data, runs the member and
writes the whole UNet. Unlike pruning, these erasures change every weight they train: the audit
attacks every feed-forward linear of such a release.

The data (`ErasureData`) on the testbed comes from Fashion-MNIST's *train* split (the relearning
attacker's images come from the test split): the concept's images with its training captions,
an anchor class's images, and the retained classes with their own captions. On a local Stable
Diffusion (`sd_data`) there is no data set: the original model draws the concept's, the anchor
prompt's and the retain prompts' images itself, before it is changed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from revival.errors import RevivalError
from revival.concepts.images import SD_TEMPLATES
from revival.registry import Registry

ERASURES = Registry("erasure method")
P_EMPTY = 0.1   # share of retain captions replaced by the empty caption (keeps guidance working)


@dataclass(frozen=True)
class ErasureConfig:
    """Settings of a fine-tuning erasure.

    steps / lr / batch: optimiser steps, AdamW rate, images a step (per part: concept, retain).
    retain_weight: weight of the retain loss (the other classes keep their denoising).
    anchor: the concept the erased captions are mapped to (None: the testbed class whose
        captions the text encoder places nearest; on SD, "a photo").
    seed: every random draw of the training (timesteps, noise, images, captions).
    esd_eta: ESD's negative-guidance scale (the concept's direction pushed away, eta times).
    secret_seed: where an erasure relies on randomness an attacker must not know (robust's
        weight noise): None draws it from the operating system and never records it; an
        integer is for research runs only (whoever knows it can undo the noise).
    """

    steps: int = 400
    lr: float = 3e-4
    batch: int = 32
    retain_weight: float = 1.0
    anchor: str | None = None
    seed: int = 0
    esd_eta: float = 1.0
    secret_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RevivalError(f"--{name} must be a positive integer, got {v!r}.")
        for name in ("lr", "retain_weight", "esd_eta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise RevivalError(f"--{name.replace('_', '-')} must be a non-negative number, got {v!r}.")
        if not self.lr > 0:
            raise RevivalError(f"--lr must be positive, got {self.lr!r}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["secret_seed"] = "os entropy (not recorded)" if self.secret_seed is None else "given (research run)"
        return d


def erasure_config(method: str, testbed: bool, **given) -> ErasureConfig:
    """ErasureConfig of erasure `method`: the `given` settings (None: not given), else the
    member's defaults (`defaults` on the testbed, `sd_defaults` on Stable Diffusion), else
    ErasureConfig's own."""
    member = ERASURES.get(method)
    base = getattr(member, "defaults", {})
    base = base if testbed else getattr(member, "sd_defaults", base)
    return ErasureConfig(**{**base, **{k: v for k, v in given.items() if v is not None}})


class ErasureData:
    """What a fine-tuning erasure trains on. Each batch is (x0, text states) on the model's
    device, drawn with the caller's CPU generator.

    concept_batch: the concept's images with its captions (what relearning would use).
    anchor_batch:  the anchor's images with the *concept's* captions (the mapping to learn).
    retain_batch:  the retained concepts' images with their own captions (some empty).
    """

    def __init__(self, denoiser, concept: str, anchor: str, concept_x0: torch.Tensor,
                 concept_captions: list[str], anchor_x0: torch.Tensor, retain_x0: torch.Tensor,
                 retain_captions: list[list[str]], retain_label: torch.Tensor):
        self.denoiser, self.concept, self.anchor = denoiser, concept, anchor
        self.concept_x0, self.anchor_x0, self.retain_x0 = concept_x0, anchor_x0, retain_x0
        self.concept_captions, self.retain_captions = list(concept_captions), retain_captions
        self.retain_label = retain_label
        self._concept_states = denoiser.encode_text(self.concept_captions)
        flat = [c for cs in retain_captions for c in cs]
        self._retain_states = denoiser.encode_text([""] + flat)
        self._offsets = torch.tensor([0] + [len(cs) for cs in retain_captions]).cumsum(0)[:-1] + 1
        self._counts = torch.tensor([len(cs) for cs in retain_captions])

    def _captions(self, gen: torch.Generator, n: int) -> torch.Tensor:
        return self._concept_states[torch.randint(0, len(self._concept_states), (n,), generator=gen).to(
            self._concept_states.device)]

    def concept_batch(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.concept_x0), (n,), generator=gen)
        return self.concept_x0[idx.to(self.concept_x0.device)], self._captions(gen, n)

    def anchor_batch(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.anchor_x0), (n,), generator=gen)
        return self.anchor_x0[idx.to(self.anchor_x0.device)], self._captions(gen, n)

    def retain_batch(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.retain_x0), (n,), generator=gen)
        lab = self.retain_label[idx]
        pick = (torch.rand(n, generator=gen) * self._counts[lab]).long()
        cap = self._offsets[lab] + pick
        cap = torch.where(torch.rand(n, generator=gen) < P_EMPTY, torch.zeros_like(cap), cap)
        dev = self.retain_x0.device
        return self.retain_x0[idx.to(dev)], self._retain_states[cap.to(self._retain_states.device)]

    def describe(self) -> dict:
        return {"concept": self.concept, "anchor": self.anchor, "concept_images": len(self.concept_x0),
                "anchor_images": len(self.anchor_x0), "retain_images": len(self.retain_x0),
                "retain_concepts": len(self.retain_captions)}


def nearest_class(concept: str, classes) -> str:
    """The testbed class (other than `concept`) whose training captions the frozen text encoder
    places nearest the concept's (mean token state, cosine): the erasure's default anchor."""
    from revival.testbed.text import class_captions, shared_encoder

    enc = shared_encoder()
    mean = {c: enc(class_captions(c)).mean((0, 1)) for c in classes}
    others = [c for c in classes if c != concept]
    sims = [float(torch.nn.functional.cosine_similarity(mean[concept], mean[c], dim=0)) for c in others]
    return others[max(range(len(others)), key=sims.__getitem__)]


def check_testbed_names(concept: str, anchor: str | None = None) -> None:
    """RevivalError unless `concept` is a testbed class and `anchor` (if given) another one."""
    from revival.testbed.text import CLASSES

    if concept not in CLASSES:
        raise RevivalError(f"unknown concept {concept!r}; the testbed knows: {', '.join(CLASSES)}.")
    if anchor is not None and (anchor not in CLASSES or anchor == concept):
        raise RevivalError(f"--anchor must be another of the testbed's classes ({', '.join(CLASSES)}), got {anchor!r}.")


def testbed_data(denoiser, concept: str, anchor: str | None = None, per_class: int = 1000,
                 seed: int = 0) -> ErasureData:
    """ErasureData from Fashion-MNIST's train split: `per_class` images of each class."""
    from revival.concepts.images import testbed_class_images
    from revival.testbed.text import CLASSES, class_captions

    check_testbed_names(concept, anchor)
    anchor = anchor if anchor is not None else nearest_class(concept, CLASSES)
    retained = [c for c in CLASSES if c != concept]
    images = testbed_class_images([concept] + retained, per_class, "train", seed, denoiser.size)
    xs = images[1:]
    return ErasureData(
        denoiser, concept, anchor,
        concept_x0=denoiser.encode_images(images[0]),
        concept_captions=class_captions(concept),
        anchor_x0=denoiser.encode_images(xs[retained.index(anchor)]),
        retain_x0=denoiser.encode_images(torch.cat(xs)),
        retain_captions=[class_captions(c) for c in retained],
        retain_label=torch.cat([torch.full((len(x),), i) for i, x in enumerate(xs)]))


# Stable Diffusion has no data set here: the original model draws the erasure's images itself.
RETAIN_PROMPTS = ("a photo of a dog", "a photo of a city street", "a bowl of fruit on a table",
                  "a portrait of a woman", "a landscape with mountains and a lake", "a red car on a road",
                  "a cup of coffee", "a house with a garden")


def sd_data(denoiser, concept: str, anchor_prompt: str = "a photo", retain_prompts=None, *,
            images: int = 8, steps: int = 25, guidance: float = 7.5, seed: int = 0,
            templates=SD_TEMPLATES) -> ErasureData:
    """ErasureData for a local Stable Diffusion, drawn by the model itself before it is changed
    (as Ablating Concepts does): `images` images of the concept (its captions: `templates`),
    `images` of the anchor prompt, and `images` spread over the retain prompts (None: the generic
    RETAIN_PROMPTS that do not name the concept). Image i of each part has its own seed."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise RevivalError(f"the number of images must be a positive integer, got {images!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RevivalError(f"--inference-steps must be a positive integer, got {steps!r}.")
    if not isinstance(concept, str) or not concept.strip():
        raise RevivalError("the concept must be a non-empty phrase.")
    if not isinstance(anchor_prompt, str) or not anchor_prompt.strip():
        raise RevivalError("--anchor must be a non-empty prompt.")
    captions = [t.format(concept) for t in templates]
    if anchor_prompt in captions:
        raise RevivalError(f"--anchor {anchor_prompt!r} is one of the concept's own captions; choose another.")
    retain = [p for p in (RETAIN_PROMPTS if retain_prompts is None else retain_prompts)
              if retain_prompts is not None or concept.lower() not in p.lower()]
    if not retain:
        raise RevivalError("the erasure needs at least one retain prompt without the concept.")
    retain = retain[:images]

    def draw(prompts: list[str], first: int) -> torch.Tensor:
        seeds = [seed * 3 * images + first + i for i in range(len(prompts))]
        return denoiser.encode_images(denoiser.model(prompts, seeds, steps=steps, guidance=guidance))

    label = torch.arange(images) % len(retain)
    return ErasureData(
        denoiser, concept, anchor_prompt,
        concept_x0=draw([captions[i % len(captions)] for i in range(images)], 0),
        concept_captions=captions,
        anchor_x0=draw([anchor_prompt] * images, images),
        retain_x0=draw([retain[i] for i in label.tolist()], 2 * images),
        retain_captions=[[p] for p in retain], retain_label=label)
