"""Digests of tensors and models: what tells two states apart by content.

Two kinds, for two uses:

* `tensor_digest` / `state_digest` / `module_digest`: in-process keys (the evaluation memo,
  `revival.evaluate.memo`; the replay attacker's layer memo). A tensor's digest is computed once per
  tensor object and in-place version, so a state of hundreds of tensors that share most of their
  objects with the last one costs only its new tensors.
* `unet_digest`: the digest written into files (image caches, eval-unlearn's release cache,
  generation records): one sha256 over the sorted names, dtypes, shapes and bytes. Its format is
  what those files hold, so it does not change with the in-process keys.
"""
from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable

import torch

_DIGESTS: dict[int, tuple[weakref.ref, int, bytes]] = {}


def tensor_digest(t: torch.Tensor) -> bytes:
    """sha256 of a tensor's dtype, shape and bytes; computed once per tensor object and version."""
    got = _DIGESTS.get(id(t))
    version = t._version
    if got is not None and got[0]() is t and got[1] == version:
        return got[2]
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}".encode())
    h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    digest = h.digest()
    if len(_DIGESTS) > 100_000:                      # forget the tensors that are gone
        for k in [k for k, v in _DIGESTS.items() if v[0]() is None]:
            del _DIGESTS[k]
    _DIGESTS[id(t)] = (weakref.ref(t), version, digest)
    return digest


def state_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, tensor digest) pairs, sorted by name."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode() + b"|" + tensor_digest(t))
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """state_digest of a module's parameters and buffers."""
    return state_digest(module.state_dict(keep_vars=True).items())


def unet_digest(unet: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """sha256 over the UNet's tensors (sorted names, dtypes, shapes and bytes): two UNets share a
    digest exactly when their weights are identical, whatever path they were loaded from."""
    state = unet.state_dict() if isinstance(unet, torch.nn.Module) else unet
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()
