"""The evaluation memo: one process judges the same images of the same model once.

An audit evaluates the original model, the release, every attacked state and the never-learned
model; a second audit in the same process (the README walkthrough audits a release and then its
defended copy, tests audit many releases of one original) evaluates the original and the
never-learned model again on the same rows. `EVAL_MEMO` keeps each evaluation's result under a key
of everything that determines it:

* the model: a sha256 over every UNet tensor's name, dtype, shape and bytes (the state evaluated,
  and the pipeline's own tensors it does not replace), and the pipeline's `fingerprint()` (its
  class, device, dtype, sampler settings, batch size and the text encoder's tensors);
* the judge: its `fingerprint()` (its name and its weights' digest);
* the rows (prompt, class, seed each, in order), the concept, the sampler steps and guidance,
  and the evaluation's batch size;
* what the caller names besides (its own settings).

A pipeline or judge without `fingerprint()` (a Stable Diffusion generator, a judge from outside
the package) is never memoised: its result is computed every time. Tensor digests are kept per
tensor object and its in-place version counter, so an in-place change to a weight is a new key.
The memo holds at most `MAX_ENTRIES` results (least recently used first out) of at most
`MAX_IMAGE_BYTES` of images each; `clear()` empties it, `enabled(False)` turns it off.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager

import torch

from revival.runtime.digest import state_digest

MAX_ENTRIES = 256
MAX_IMAGE_BYTES = 64 << 20
class EvalMemo:
    def __init__(self) -> None:
        self._items: OrderedDict[str, object] = OrderedDict()
        self.on = True
        self.hits = self.misses = 0

    def key(self, pipeline, state: Mapping[str, torch.Tensor], rows, classifier, concept: str,
            settings: Mapping) -> str | None:
        """The key of evaluating `state` (loaded into pipeline.unet) on `rows`, or None where a part
        cannot be fingerprinted (then nothing is memoised)."""
        pf, cf = getattr(pipeline, "fingerprint", None), getattr(classifier, "fingerprint", None)
        unet = getattr(pipeline, "unet", None)
        if not self.on or pf is None or cf is None or unet is None:
            return None
        own = unet.state_dict(keep_vars=True)
        model = state_digest([*((n, t) for n, t in own.items() if n not in state),
                              *((n, t) for n, t in state.items() if n in own)])
        extra = sorted(n for n in state if n not in own)
        h = hashlib.sha256()
        for part in (model, pf(), cf(), repr(extra), repr(concept), repr(sorted(settings.items())),
                     repr([(r.prompt, r.cls, int(r.seed)) for r in rows])):
            h.update(str(part).encode() + b"\x00")
        return h.hexdigest()

    def get_or_compute(self, key: str | None, compute: Callable[[], object], images: Callable[[object], int]):
        """The memoised result of `key`, else compute() (kept when its images fit)."""
        if key is None:
            return compute()
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute()
        if images(value) <= MAX_IMAGE_BYTES:
            self._items[key] = value
            while len(self._items) > MAX_ENTRIES:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


EVAL_MEMO = EvalMemo()


@contextmanager
def enabled(on: bool):
    """Turn the process-wide memo on or off inside a block."""
    was, EVAL_MEMO.on = EVAL_MEMO.on, bool(on)
    try:
        yield EVAL_MEMO
    finally:
        EVAL_MEMO.on = was
