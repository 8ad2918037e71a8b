"""Target layers: which 2-D weights of a checkpoint the attack, the defense and the scores act on."""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .errors import RevivalError
from .io.store import TensorStore, tensor_meta

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

