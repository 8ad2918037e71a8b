"""Neuron deactivation: erase a concept by switching off whole hidden units.

After neuron-level methods such as NeMo (NeurIPS 2024), as shared/reference/PAPER.md records
them: units whose activation is higher for the concept than for base prompts are deactivated
by zeroing their whole weight rows. Two unit kinds:

- ``ff`` (default): the hidden units of every transformer block's feed-forward. Unit j's
  activation is column j of the input of ``ff.net.2`` (the GEGLU output); deactivating it zeroes
  its input rows in ``ff.net.0.proj`` (value row j and gate row hidden + j, and their biases),
  so the unit outputs exactly 0.
- ``attn2``: the cross-attention value features (NeMo's target). Feature j's activation is
  column j of the input of ``attn2.to_out.0``; deactivating it zeroes row j of ``attn2.to_v``
  (and its bias when there is one).

Selection, per layer: the activation statistics of ConceptPrune (`collect_activations`: per
token L2-normalised, root mean square per unit, per denoising step, first `steps` steps), mean
over steps; the top round(ratio * units) units by a_target / a_base among those with
a_target > a_base.

Whole rows leave no surviving entry to complete from; `revival.attack.rows` says what the
attack can still do about them (the partner's intact output columns).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from revival.errors import RevivalError
from revival.unlearn.result import UnlearnResult

# unit kind -> (regex of the modules whose INPUT is the unit activation, suffix of that module,
#               suffix of the module whose rows are zeroed)
UNITS = {
    "ff": (r"transformer_blocks\.\d+\.ff\.net\.2$", "ff.net.2", "ff.net.0.proj"),
    "attn2": (r"transformer_blocks\.\d+\.attn2\.to_out\.0$", "attn2.to_out.0", "attn2.to_v"),
}


@dataclass(frozen=True)
class NeuronsConfig:
    """ratio: share of each layer's units deactivated (at most; only units more active for the
    concept qualify). steps: first denoising steps whose statistics count. units: "ff" | "attn2".
    seed, batch_size, inference_steps, guidance: as in ConceptPrune."""

    ratio: float = 0.05
    steps: int = 10
    units: str = "ff"
    seed: int = 0
    batch_size: int = 16
    inference_steps: int | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio < 1.0):
            raise RevivalError(f"ratio must be in (0, 1), got {self.ratio!r}.")
        if self.units not in UNITS:
            raise RevivalError(f"units must be one of {', '.join(UNITS)}, got {self.units!r}.")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise RevivalError(f"steps must be a positive integer, got {self.steps!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise RevivalError(f"seed must be a non-negative integer, got {self.seed!r}.")


def select_units(a_target: torch.Tensor, a_base: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices of the units to deactivate: top round(ratio * n) by a_target / a_base among
    a_target > a_base (a: [steps, n] or [n]; steps are averaged)."""
    at = a_target.float().reshape(-1, a_target.shape[-1]).mean(0)
    ab = a_base.float().reshape(-1, a_base.shape[-1]).mean(0)
    k = max(1, int(round(ratio * at.numel())))
    score = torch.where(at > ab, at / ab.clamp(min=1e-12), torch.full_like(at, -1.0))
    top = torch.topk(score, k).indices
    return top[score[top] > 0].sort().values


def unit_masks(tensors: dict[str, torch.Tensor], key: str, units: torch.Tensor, hidden: int) -> dict[str, torch.Tensor]:
    """Row masks of the input linear `key` (weight [g*hidden, dim]) and its bias for `units`."""
    w = tensors[key]
    g = w.shape[0] // hidden
    rows = (torch.cat([units + i * hidden for i in range(g)]) if units.numel() else units).to(w.device)
    wm = torch.zeros(w.shape, dtype=torch.bool, device=w.device)  # on the weights' device
    wm[rows] = True
    out = {key: wm}
    bkey = key[: -len("weight")] + "bias"
    if bkey in tensors:
        bm = torch.zeros(tensors[bkey].shape, dtype=torch.bool, device=tensors[bkey].device)
        bm[rows] = True
        out[bkey] = bm
    return out


def neurons(pipeline, target_prompts: Sequence[str], base_prompts: Sequence[str],
            config: NeuronsConfig = NeuronsConfig(), *, progress: bool = False
            ) -> tuple[dict[str, torch.Tensor], UnlearnResult]:
    """Masks (whole rows of the input linears, and their bias entries) deactivating the
    concept's units; the model is not modified. Returns (key -> bool mask, result)."""
    from revival.unlearn.conceptprune import ConceptPruneConfig, collect_activations, make_pipeline_call

    unet = pipeline.unet
    pattern, out_suffix, in_suffix = UNITS[config.units]
    call = make_pipeline_call(pipeline, ConceptPruneConfig(steps=config.steps, inference_steps=config.inference_steps,
                                                           guidance=config.guidance))
    seconds = {}
    stats = {}
    for label, prompts in (("target", target_prompts), ("base", base_prompts)):
        t0 = time.perf_counter()
        st = collect_activations(call, unet, list(prompts), steps=config.steps, seed=config.seed,
                                 batch_size=config.batch_size, modules=pattern)
        stats[label] = {name: s.norms() for name, s in st.items()}
        seconds[f"collect_{label}"] = time.perf_counter() - t0
    state = dict(unet.state_dict())
    masks: dict[str, torch.Tensor] = {}
    for name in stats["target"]:
        key = name[: -len(out_suffix)] + in_suffix + ".weight"
        if key not in state:
            raise RevivalError(f"The UNet has no {key} to deactivate units in.")
        hidden = stats["target"][name].shape[-1]
        if state[key].shape[0] % hidden:
            raise RevivalError(f"{key} has {state[key].shape[0]} rows, not a multiple of {hidden} units.")
        units = select_units(stats["target"][name], stats["base"][name], config.ratio)
        masks.update(unit_masks(state, key, units, hidden))
    result = UnlearnResult("neurons", asdict(config), len(target_prompts), len(base_prompts))
    result.add_masks({k: m for k, m in masks.items() if m.ndim == 2})
    result.seconds = seconds
    return masks, result
