"""ConceptPrune on the text encoder's feed-forwards (one of the reference scripts' other targets).

The text encoder runs once per prompt (no denoising steps), so there is one mask per layer:
the inputs of each feed-forward output linear (CLIP's ``mlp.fc2``, BERT/MiniLM's
``output.dense`` -- not ``attention.output.dense``) are captured for the target and the base
prompts; each token's activation vector is L2-normalised, squared column norms are averaged
over all tokens, and ConceptPrune's rule (`conceptprune.step_mask`: per row the top
``skill_ratio * in_features`` columns by |W| * a_target, where also a_target > a_base) gives
the mask. Works on any Hugging Face text model given with a tokenizer.

Example::

    enc = revival.testbed.text.shared_encoder()          # the testbed's MiniLM-L6
    masks = text_encoder_masks(enc.model, enc.tokenizer, target, base, skill_ratio=0.05)
    pruned = apply_masks(dict(enc.model.state_dict()), masks)
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F

from revival.errors import RevivalError

TEXT_FF_MODULES = r"(mlp\.fc2|(?<!attention\.)output\.dense)$"


def text_activation_norms(model: torch.nn.Module, tokenizer, prompts: Sequence[str], modules: str = TEXT_FF_MODULES,
                          max_length: int | None = None, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """weight key -> a [in_features]: root mean square over tokens of the L2-normalised input
    of every Linear matching `modules`."""
    rx = re.compile(modules)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and rx.search(n)}
    if not layers:
        raise RevivalError(f"The text encoder has no Linear layer matching {modules!r}.")
    prompts = list(prompts)
    if not prompts:
        raise RevivalError("The prompt list is empty.")
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in layers.items()}
    count = {"tokens": 0}

    def hook(name):
        def on_input(_m, args):
            x = F.normalize(args[0].detach().reshape(-1, args[0].shape[-1]).float(), dim=-1)
            sums[name] += (x * x).sum(0).double().cpu()
        return on_input

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    device = next(model.parameters()).device
    kw = dict(padding="max_length", truncation=True, max_length=max_length) if max_length else dict(padding=True)
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", **kw).to(device)
                model(**enc)
                count["tokens"] += int(enc["input_ids"].numel())
    finally:
        for h in handles:
            h.remove()
    return {f"{n}.weight": (s / max(1, count["tokens"])).sqrt().float() for n, s in sums.items()}


def text_encoder_masks(model: torch.nn.Module, tokenizer, target_prompts: Sequence[str],
                       base_prompts: Sequence[str], *, skill_ratio: float = 0.02,
                       modules: str = TEXT_FF_MODULES, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """ConceptPrune masks (weight key -> bool [out, in]) of the text encoder's feed-forward
    output linears; the model is not modified."""
    from revival.unlearn.conceptprune import step_mask

    if not (isinstance(skill_ratio, (int, float)) and 0.0 < skill_ratio <= 1.0):
        raise RevivalError(f"skill_ratio must be in (0, 1], got {skill_ratio!r}.")
    a_t = text_activation_norms(model, tokenizer, target_prompts, modules, max_length)
    a_b = text_activation_norms(model, tokenizer, base_prompts, modules, max_length)
    weights = dict(model.named_parameters())
    return {key: step_mask(weights[key].detach().cpu(), a_t[key], a_b[key], skill_ratio) for key in a_t}
