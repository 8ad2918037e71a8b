"""The release's own activation statistics, for attackers that rerun a method's selection.

ConceptPrune's statistics (the input norms of every pruned Linear, per denoising step) are
computed by layers the release keeps intact, so an attacker who knows the method and the
concept's public prompts recomputes them on the release. `release_activations` collects them
for exactly the audited layers (any Linear whose input can be hooked: `ff.net.2`,
`ff.net.0.proj`, `attn2.to_v`, ...), with the release's weights loaded into the pipeline for
the collection only.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch

from revival.errors import RevivalError


class loaded_state:
    """Context: `state` loaded into `module` (partially), its previous weights put back after."""

    def __init__(self, module: torch.nn.Module, state: Mapping[str, torch.Tensor]):
        self.module, self.state = module, state

    def __enter__(self):
        own = self.module.state_dict()
        self.saved = {k: own[k].detach().clone() for k in self.state if k in own}
        self.module.load_state_dict(dict(self.state), strict=False)
        return self.module

    def __exit__(self, *exc):
        self.module.load_state_dict(self.saved, strict=False)
        return False


def modules_pattern(layers: Sequence[str]) -> str:
    """A regex matching exactly the Linear modules of the weight keys `layers` ("X.weight")."""
    mods = [n[: -len(".weight")] for n in layers if n.endswith(".weight")]
    if not mods:
        raise RevivalError("no Linear weight among the layers whose activations are asked for.")
    return "^(" + "|".join(re.escape(m) for m in mods) + ")$"


def release_activations(pipeline, state: Mapping[str, torch.Tensor], steps: int, seed: int = 0,
                        inference_steps: int | None = None, guidance: float | None = None,
                        halves: str = "both", layers: Sequence[str] | None = None
                        ) -> Callable[[Sequence[str]], dict[str, torch.Tensor]]:
    """prompts -> {weight key: activation norms [steps, in] (CPU, float32)} of the input of every
    layer in `layers` (default: every ff.net.2), collected with `state` loaded into the
    pipeline's UNet (ConceptPrune's statistics, rerun on the release). Cached per prompt list."""
    from revival.unlearn.conceptprune import ConceptPruneConfig, collect_activations, make_pipeline_call

    kw = {"modules": modules_pattern(layers)} if layers is not None else {}
    cfg = ConceptPruneConfig(steps=steps, seed=seed, inference_steps=inference_steps, guidance=guidance,
                             halves=halves, **kw)
    call = make_pipeline_call(pipeline, cfg)
    cache: dict[tuple, dict] = {}

    def activations(prompts):
        key = tuple(prompts)
        if key not in cache:
            with loaded_state(pipeline.unet, state):
                stats = collect_activations(call, pipeline.unet, list(prompts), steps=steps, seed=seed,
                                            batch_size=cfg.batch_size, modules=cfg.modules, halves=halves)
            cache[key] = {f"{n}.weight": s.norms().float().cpu() for n, s in stats.items()}
        return cache[key]

    return activations
