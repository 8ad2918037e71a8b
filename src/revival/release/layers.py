"""Target layers: which 2-D weights of a checkpoint the attack, the defense and the scores act on."""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from revival.errors import RevivalError
from revival.io.store import TensorStore, tensor_meta
from revival.release.pairs import present_partner

DEFAULT_LAYERS = r"transformer_blocks\.\d+\.ff\.net\.2\.weight$"


def select_layers(tensors: Mapping[str, torch.Tensor], pattern: str | None = DEFAULT_LAYERS) -> list[str]:
    """Names (diffusers naming, checkpoint order) of the 2-D floating-point weights whose name
    matches the regex `pattern` (re.search; an LDM file's own key names match too).

    Raises RevivalError for a bad regex or when nothing matches.
    """
    pattern = DEFAULT_LAYERS if pattern is None else pattern
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise RevivalError(f"the layer pattern {pattern!r} is not a valid regular expression ({exc}).") from None
    store = tensors if isinstance(tensors, TensorStore) else None
    names = []
    for name in tensors:
        if not (rx.search(name) or (store is not None and rx.search(store.file_key(name)))):
            continue
        dtype, shape = tensor_meta(tensors, name)
        if dtype.is_floating_point and len(shape) == 2:
            names.append(name)
    if not names:
        hint = " (the default: every transformer block's ff.net.2.weight)" if pattern == DEFAULT_LAYERS else ""
        raise RevivalError(f"no 2-D floating-point weight matches the layer pattern {pattern!r}{hint}; "
                           "choose layers with --layers REGEX.")
    return names


def check_finite(tensors: Mapping[str, torch.Tensor], layers: list[str], where: str = "the checkpoint") -> None:
    """RevivalError if a target layer holds NaN or inf."""
    for name in layers:
        t = tensors[name]
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise RevivalError(f"{where} has {bad} NaN/inf value(s) in the target layer {name}.")



# --------------------------------------------------------------------------- found by their zeros

# 2-D weights that are not linear maps: token / position embedding tables (a padding row may be
# zero by design). Their zeros are never taken for a pruning mask.
NOT_PRUNABLE = r"(^|\.)(embeddings?|embed_tokens|word_embeddings|position_embedding|token_embedding)(\.|$)"


def detect_pruned_layers(tensors: Mapping[str, torch.Tensor], *, alpha: float | None = None,
                         exclude: str | None = NOT_PRUNABLE, progress: bool = False) -> list:
    """Every 2-D floating-point weight whose exact zeros are more than chance explains for its
    dtype and size (`revival.release.masks.layer_zero_test`), in checkpoint order, as
    `revival.release.masks.PrunedLayer` (name, zeros, expected by chance, p-value, zero pattern).

    Works on any state dict: a UNet, a text encoder, a full single-file checkpoint. A lazy
    TensorStore reads one tensor at a time and forgets those it had not loaded before.
    """
    from revival.release.masks import CHANCE_ALPHA, layer_zero_test

    alpha = CHANCE_ALPHA if alpha is None else alpha
    rx = re.compile(exclude) if exclude else None
    store = tensors if isinstance(tensors, TensorStore) else None
    had = set(store.loaded()) if store is not None else set()
    names = list(tensors)
    if progress:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="find pruned layers", unit="tensor", leave=False)
    found = []
    for name in names:
        dtype, shape = tensor_meta(tensors, name)
        if not dtype.is_floating_point or len(shape) != 2 or (rx is not None and rx.search(name)):
            continue
        hit = layer_zero_test(name, tensors[name], alpha=alpha)
        if hit is not None:
            found.append(hit)
        if store is not None and name not in had:
            store.release(name)
    return found


def target_layers(tensors: Mapping[str, torch.Tensor], pattern: str | None = None) -> list[str]:
    """The layers to act on: those matching `pattern` (`select_layers`) when one is given,
    else every layer found pruned by its exact zeros (`detect_pruned_layers`).

    RevivalError when no layer is found (with the hint to choose layers with --layers).
    """
    if pattern is not None:
        return select_layers(tensors, pattern)
    found = detect_pruned_layers(tensors)
    if not found:
        raise RevivalError("no 2-D weight holds more exact zeros than chance explains for its dtype "
                           "and size, so no pruned layer was found (not pruned, or obfuscated); "
                           "choose layers with --layers REGEX.")
    return [p.name for p in found]


def check_matrices(tensors: Mapping[str, torch.Tensor], layers, what: str = "the attack") -> None:
    """RevivalError unless every target layer is a finite floating-point matrix of `tensors`."""
    if not layers:
        raise RevivalError(f"no target layers were given to {what}.")
    for name in layers:
        if name not in tensors:
            raise RevivalError(f"target layer {name!r} is not in the checkpoint.")
        t = tensors[name]
        if t.ndim != 2 or not t.is_floating_point():
            raise RevivalError(f"target layer {name!r} is not a matrix of floating-point weights "
                               f"(shape {tuple(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}).")
        if not bool(torch.isfinite(t).all()):
            raise RevivalError(f"target layer {name!r} contains NaN or infinite weights.")


# --------------------------------------------------------------------------- what a release changed

def changed_layers(model_state: Mapping[str, torch.Tensor], release: Mapping[str, torch.Tensor]) -> list[str]:
    """2-D floating-point weights of the release that differ from the model's own (compared in the
    release's dtype, so an fp16 copy of the model is not "changed")."""
    rx = re.compile(NOT_PRUNABLE)
    out = []
    for k, r in release.items():
        m = model_state.get(k)
        if m is None or r.ndim != 2 or not r.is_floating_point() or rx.search(k) or tuple(m.shape) != tuple(r.shape):
            continue
        if not torch.equal(m.to(device=r.device, dtype=r.dtype), r):
            out.append(k)
    return out


DENSE_SHARE = 0.5   # a release that changed more than this share of the model's matrices is a dense change
FEED_FORWARD = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)\.weight$"


def is_dense_change(model_state: Mapping[str, torch.Tensor], release: Mapping[str, torch.Tensor]) -> bool:
    """True when the release changed most of the model's weight matrices (a fine-tune or a
    retrain of the same architecture), not a sparse edit of some layers."""
    rx = re.compile(NOT_PRUNABLE)
    shared = [k for k, r in release.items() if k in model_state and r.ndim == 2 and r.is_floating_point()
              and not rx.search(k) and tuple(model_state[k].shape) == tuple(r.shape)]
    return bool(shared) and len(changed_layers(model_state, release)) > DENSE_SHARE * len(shared)


def audit_layers(model_state: Mapping[str, torch.Tensor], release: Mapping[str, torch.Tensor],
                 pattern: str | None = None) -> list[str]:
    """The layers the audit attacks: those matching `pattern`; else every layer found pruned by its
    exact zeros (the detection `inspect`, `attack` and `defend` use), every 2-D weight the release
    changed from the model's own (a defended release hides its zeros, not its changes), and the
    other linear of each one's hidden units (`revival.release.pairs`): an attacker may edit any layer, and
    on the testbed an edit of the untouched ff.net.0.proj alone brought an erased concept back.
    A dense change (`is_dense_change`: a fine-tune or retrain) is attacked in every feed-forward
    linear of the transformer blocks, the layers the paper's attack and pruning work on."""
    if pattern is not None:
        return select_layers(release, pattern)
    if is_dense_change(model_state, release):   # everything changed: every feed-forward linear
        rx = re.compile(FEED_FORWARD)
        return [k for k in release if rx.search(k) and release[k].ndim == 2]
    found = {p.name for p in detect_pruned_layers(release)}
    found |= set(changed_layers(model_state, release))
    found |= {p[0] for n in found if (p := present_partner(n, release)) is not None and release[p[0]].ndim == 2}
    return [k for k in release if k in found]


def uncovered_changes(model_state, release, layers) -> list[str]:
    """Tensors the release changed that no attacker revives: not an audited matrix, nor the bias of
    one (a defense redraws the biases of the units it retires)."""
    covered = set(layers) | {n[: -len("weight")] + "bias" for n in layers if n.endswith("weight")}
    out = []
    for k, r in release.items():
        m = model_state.get(k)
        if k in covered or m is None or tuple(m.shape) != tuple(r.shape):
            continue
        if not torch.equal(m.to(device=r.device, dtype=r.dtype), r):
            out.append(k)
    return out
