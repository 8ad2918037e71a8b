"""The never-learned model of a concept: the same recipe and seed as the model, trained without
the concept's images (`revival testbed train --without CONCEPT --task-steps 0`). It is the gold
standard an erasure is measured against, and the model every attack is calibrated on.

    shipped_never_learned(concept)              the testbed's committed one, or None
    load_never_learned(path, concept, model)    its UNet state, checked to be of that concept
                                                and of the model's architecture

A never-learned model records which concept it never learned: `revival testbed train --without`
writes it into testbed.json ("without"); for another model, write never_learned.json
({"without": CONCEPT}) beside its UNet.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from revival.errors import RevivalError

RECORDS = ("never_learned.json", "testbed.json")


def shipped_dir() -> Path:
    from revival.testbed.pipeline import WEIGHTS_DIR

    return WEIGHTS_DIR / "never-learned"


def shipped_concepts() -> list[str]:
    d = shipped_dir()
    return sorted(p.name for p in d.iterdir() if (p / "unet" / "config.json").is_file()) if d.is_dir() else []


def shipped_never_learned(concept: str) -> Path | None:
    """The committed never-learned testbed model of `concept` (its folder), or None."""
    p = shipped_dir() / concept
    return p if (p / "unet" / "config.json").is_file() else None


def never_learned_record(path: str | Path) -> tuple[dict, Path] | None:
    """The record beside a never-learned model (in its folder or the one above), or None."""
    path = Path(path)
    for folder in (path, path.parent) if path.is_dir() else (path.parent, path.parent.parent):
        for name in RECORDS:
            f = folder / name
            if f.is_file():
                try:
                    return json.loads(f.read_text()), f
                except (OSError, ValueError):
                    raise RevivalError(f"{f} is not readable JSON.") from None
    return None


def check_never_learned(path: str | Path, concept: str, task: str | None = "objects") -> Path:
    """The UNet checkpoint of the never-learned model at `path`, refused (one sentence) unless
    its record says it never learned `concept` (and, on the testbed's object task, that it
    is the object recipe's twin)."""
    path = Path(path)
    if not path.exists():
        raise RevivalError(f"the never-learned model {path} does not exist.")
    rec = never_learned_record(path)
    if rec is None or not isinstance(rec[0], dict) or "without" not in rec[0]:
        raise RevivalError(f"the never-learned model {path} does not say which concept it never learned: give the "
                           "output of `revival testbed train --without CONCEPT`, or write never_learned.json "
                           '({"without": CONCEPT}) beside its UNet.')
    data, where = rec
    without = data.get("without")
    if without != concept:
        raise RevivalError(f"the never-learned model {path} never learned {without!r} ({where.name}), not {concept!r}: "
                           "give the never-learned model of the audited concept.")
    if where.name == "testbed.json" and task in (None, "objects") and data.get("stage3_task_steps"):
        raise RevivalError(f"the never-learned model {path} was trained with the tasks' stage 3 (the artists/nudity "
                           "testbed); the object testbed's never-learned twin is trained with --task-steps 0.")
    unet = path / "unet" if (path / "unet").is_dir() else path
    return unet


def load_never_learned(path: str | Path, concept: str, model_state: Mapping[str, torch.Tensor],
                       task: str | None = "objects") -> dict[str, torch.Tensor]:
    """The never-learned model's full UNet state on `model_state`'s devices and dtypes, refused
    unless it holds every tensor of the model with the model's shapes."""
    from revival.io import load_checkpoint

    ckpt = load_checkpoint(check_never_learned(path, concept, task))
    out = {}
    for k, m in model_state.items():
        t = ckpt.tensors.get(k)
        if t is None or tuple(t.shape) != tuple(m.shape):
            got = "no tensor" if t is None else f"shape {tuple(t.shape)}"
            raise RevivalError(f"the never-learned model {path} has {got} for {k!r} where the model has "
                               f"{tuple(m.shape)}: it is not of the model's architecture.")
        if not bool(torch.isfinite(t).all()):
            raise RevivalError(f"the never-learned model {path} holds NaN or infinite weights in {k!r}.")
        out[k] = t.to(device=m.device, dtype=m.dtype)
    return out
