"""ConceptPrune: erase a concept from a diffusion UNet by pruning feed-forward weights.

Chavhan et al., "ConceptPrune: Concept Editing in Diffusion Models via Skilled Neuron
Pruning" (ICLR 2025) -- the unlearning that "Roots Beneath the Cut" (Zhang et al., CVPR 2026)
attacks. The method, as its released code runs it (shared/reference/PAPER.md):

1. Forward pre-hooks on every transformer block's second feed-forward linear (`ff.net.2`)
   capture its input (the GEGLU output) at each denoising step, for both halves of
   classifier-free guidance. Each token's activation vector is L2-normalised across
   features; squared column norms are accumulated over all tokens of all prompts, per
   (step, layer), once for the *target* prompts (with the concept) and once for the *base*
   prompts (without it).
2. WANDA score S = |W| * a, a = sqrt(mean squared column norm) per input column.
3. Per (step, layer) and per row: the top `skill_ratio * in_features` columns by target
   score, AND target score > base score (element-wise, so the mask clusters in columns).
4. The pruned model zeroes the union of the masks of the first `steps` (tau) steps.

Shapes: W is [out, in] (diffusers naming, e.g.
`down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight`); activations are
[batch, tokens, in]; statistics are [tau, in] per layer; masks are bool [out, in].

Example::

    pipe = revival.testbed.load_pipeline()
    cfg = ConceptPruneConfig(skill_ratio=0.02, steps=10)
    target, base = concept_prompts("sneaker", pipe.classes)
    masks, result = conceptprune(pipe, target, base, cfg)
    updates = apply_masks(dict(pipe.unet.state_dict()), masks)

Only the first tau denoising steps are needed, so collection stops each pipeline call
right after step tau (a private exception raised by a UNet forward pre-hook).

Device and precision: the statistics are fp64 sums kept on the device of the hooked layer (the
weights' device), the masks are computed and returned on the weights' device; the model may run
in fp16/bf16 (`revival.runtime.device`). Distributed (`accelerate launch`/`torchrun`): the prompt batches
are shared among the processes, each sums its own, then one all-reduce; every prompt keeps its
seed (seed + its index), so the masks are those of one process.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from revival.runtime import distributed as dist
from revival.concepts.catalog import task_prompts  # noqa: F401 (public name: the registry's pairs, else the paper's)
from revival.errors import RevivalError
from revival.unlearn.masks_io import load_masks, save_masks  # noqa: F401 (public names)
from revival.unlearn.prompt_sets import (HUMANS, PRESETS, SCENES, TESTBED_HALVES, TESTBED_PRESETS,  # noqa: F401 (public names)
                          TESTBED_TASK_TEMPLATES, TESTBED_TEMPLATES, THINGS, artist_prompts, concept_prompts,
                          nudity_prompts, object_prompts, testbed_task_prompts)
from revival.unlearn.result import UnlearnResult

# Module names of the pruned layers (the weight keys add ".weight").
DEFAULT_MODULES = r"transformer_blocks\.\d+\.ff\.net\.2$"

@dataclass(frozen=True)
class ConceptPruneConfig:
    """ConceptPrune's settings.

    skill_ratio: share of each row's input columns that may be pruned per step (paper: 0.02
        objects, 0.01 artists/nudity).
    steps: tau, the number of first denoising steps whose masks are united (paper: 10; 9 nudity).
    seed: base seed; prompt i is generated with seed + i.
    batch_size: prompts per pipeline call.
    inference_steps: denoising steps of the sampler schedule (None: the pipeline's default;
        the schedule, hence the first tau timesteps, depends on it).
    guidance: classifier-free guidance scale (None: the pipeline's default).
    modules: regular expression over UNet module names selecting the pruned Linear layers.
    halves: which classifier-free-guidance halves feed the statistics: "both" (the paper's
        released code) or "cond" (only the prompt-conditioned half; SD and the testbed batch
        [uncond, cond]).
    """

    skill_ratio: float = 0.02
    steps: int = 10
    seed: int = 0
    batch_size: int = 16
    inference_steps: int | None = None
    guidance: float | None = None
    modules: str = DEFAULT_MODULES
    halves: str = "both"

    def __post_init__(self) -> None:
        if self.halves not in ("both", "cond"):
            raise RevivalError(f"halves must be 'both' or 'cond', got {self.halves!r}.")
        if not (isinstance(self.skill_ratio, (int, float)) and 0.0 < self.skill_ratio <= 1.0):
            raise RevivalError(f"--skill-ratio must be in (0, 1], got {self.skill_ratio!r}.")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise RevivalError(f"--steps must be a positive integer, got {self.steps!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise RevivalError(f"--seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise RevivalError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        if self.inference_steps is not None and (
                not isinstance(self.inference_steps, int) or self.inference_steps < self.steps):
            raise RevivalError(
                f"inference_steps must be an integer >= steps ({self.steps}), got {self.inference_steps!r}.")
        if self.guidance is not None and not (isinstance(self.guidance, (int, float))
                                              and math.isfinite(self.guidance)):
            raise RevivalError(f"--guidance must be a finite number, got {self.guidance!r}.")
        try:
            re.compile(self.modules)
        except re.error as exc:
            raise RevivalError(f"modules is not a valid regular expression ({exc}).") from None


ConceptPruneResult = UnlearnResult  # what ConceptPrune did (method "conceptprune")


# --------------------------------------------------------------------------- statistics

class _StopCollection(Exception):
    """Raised by the UNet hook once the last needed step has run (ends the pipeline call)."""


class LayerStats:
    """Accumulator for one Linear layer (sparsegpt style: `add_batch`, then read `norms`).

    Holds, per step, the sum over tokens of squared L2-normalised activations per input
    column (fp64, on the device of the activations, i.e. of the layer's weights; fp32 on a device
    without fp64), and the token count.
    """

    def __init__(self, in_features: int, steps: int, device: torch.device | str = "cpu"):
        device = torch.device(device)
        acc = torch.float32 if device.type == "mps" else torch.float64
        self.sq = torch.zeros(steps, in_features, dtype=acc, device=device)
        self.tokens = torch.zeros(steps, dtype=acc, device=device)

    def add_batch(self, step: int, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        x = F.normalize(x, dim=-1)
        self.sq[step] += (x * x).sum(0).to(device=self.sq.device, dtype=self.sq.dtype)
        self.tokens[step] += x.shape[0]

    def all_reduce(self) -> "LayerStats":
        """Sum the statistics over the processes of a distributed launch (a no-op alone)."""
        dist.all_reduce_sum(self.sq)
        dist.all_reduce_sum(self.tokens)
        return self

    def norms(self) -> torch.Tensor:
        """a[step, column] = sqrt(mean over tokens of the squared normalised activation), fp32,
        on the statistics' device."""
        if bool((self.tokens == 0).any()):
            missing = int((self.tokens == 0).nonzero()[0])
            raise RevivalError(
                f"The pipeline ran fewer denoising steps than --steps asks for (no activations at step {missing}).")
        return (self.sq / self.tokens[:, None]).sqrt().float()


def find_layers(unet: torch.nn.Module, pattern: str = DEFAULT_MODULES) -> dict[str, torch.nn.Linear]:
    """Module name -> Linear for every module of `unet` whose name matches `pattern`."""
    rx = re.compile(pattern)
    layers = {name: m for name, m in unet.named_modules()
              if isinstance(m, torch.nn.Linear) and rx.search(name)}
    if not layers:
        raise RevivalError(f"The UNet has no Linear layer matching {pattern!r}.")
    return layers


def collect_activations(pipeline_call: Callable[[list[str], list[int]], object],
                        unet: torch.nn.Module, prompts: Sequence[str], *, steps: int,
                        seed: int = 0, batch_size: int = 16, modules: str = DEFAULT_MODULES,
                        progress: Callable[[int], None] | None = None,
                        halves: str = "both") -> dict[str, LayerStats]:
    """Run `pipeline_call(prompts, seeds)` over `prompts` and accumulate ff.net.2 input statistics.

    The pipeline must make ONE UNet forward per denoising step (cond and uncond batched, as
    diffusers' pipelines and the testbed do): a UNet forward pre-hook counts steps and ends the
    call after `steps` of them. Prompt i runs with seed `seed + i`. `progress(n)` is called
    after each batch with the number of prompts done. `halves="cond"` keeps only the second
    half of a CFG-doubled batch (the conditional one). Distributed: the batches are shared among
    the processes and the sums all-reduced (the same batches, hence the same statistics, as one
    process).
    """
    prompts = list(prompts)
    if not prompts:
        raise RevivalError("The prompt list is empty.")
    layers = find_layers(unet, modules)
    stats = {name: LayerStats(m.in_features, steps, m.weight.device) for name, m in layers.items()}
    state = {"step": -1, "n": 0}

    def on_unet(_module, _args):
        state["step"] += 1
        if state["step"] >= steps:
            raise _StopCollection

    def make_hook(name):
        def on_layer(_module, args):
            x = args[0]
            if halves == "cond" and x.shape[0] == 2 * state["n"]:
                x = x[state["n"]:]
            stats[name].add_batch(state["step"], x)
        return on_layer

    handles = [unet.register_forward_pre_hook(on_unet)]
    handles += [m.register_forward_pre_hook(make_hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            starts = list(range(0, len(prompts), batch_size))
            for start in [starts[k] for k in dist.shard(len(starts))]:
                batch = prompts[start:start + batch_size]
                seeds = [seed + start + i for i in range(len(batch))]
                state["step"], state["n"] = -1, len(batch)
                try:
                    pipeline_call(batch, seeds)
                except _StopCollection:
                    pass
                if progress is not None:
                    progress(start + len(batch))
    finally:
        for h in handles:
            h.remove()
    for s in stats.values():
        s.all_reduce()
        s.norms()  # refuses statistics with an empty step (the pipeline ran too few steps)
    return stats


# --------------------------------------------------------------------------- masks

def step_mask(weight: torch.Tensor, a_target: torch.Tensor, a_base: torch.Tensor,
              skill_ratio: float) -> torch.Tensor:
    """One (step, layer) mask: per row the top-k columns by |W|*a_target, where also
    |W|*a_target > |W|*a_base. k = int(skill_ratio * in_features). Ties: lower column first.
    Computed in fp32 on the weight's device; the mask lives there too."""
    w = weight.detach().abs().float()
    s_target = w * a_target.to(w.device, torch.float32)[None, :]
    s_base = w * a_base.to(w.device, torch.float32)[None, :]
    k = int(skill_ratio * w.shape[1])
    mask = torch.zeros_like(w, dtype=torch.bool)
    if k == 0:
        return mask
    top = torch.argsort(s_target, dim=1, descending=True, stable=True)[:, :k]
    mask.scatter_(1, top, True)
    return mask & (s_target > s_base)


def conceptprune_masks(weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                       base: dict[str, torch.Tensor], *, skill_ratio: float,
                       steps: int) -> dict[str, torch.Tensor]:
    """Union over the first `steps` steps of the per-step masks.

    weights: weight key -> W [out, in]; target/base: the same keys -> a [>= steps, in].
    Returns weight key -> bool mask [out, in] (True = prune), on the weight's device.
    """
    masks = {}
    for key, w in weights.items():
        if key not in target or key not in base:
            raise RevivalError(f"No activation statistics for layer {key}.")
        a_t, a_b = target[key], base[key]
        if a_t.shape[0] < steps or a_b.shape[0] < steps:
            raise RevivalError(f"Layer {key} has statistics for fewer than {steps} steps.")
        if a_t.shape[-1] != w.shape[1] or a_b.shape[-1] != w.shape[1]:
            raise RevivalError(f"Layer {key}: activation width does not match the weight's {w.shape[1]} columns.")
        mask = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
        for t in range(steps):
            mask |= step_mask(w, a_t[t], a_b[t], skill_ratio)
        masks[key] = mask
    return masks


def apply_masks(tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Updated copies of the masked tensors, pruned positions set to exactly zero (same dtype)."""
    updates = {}
    for key, mask in masks.items():
        if key not in tensors:
            raise RevivalError(f"The checkpoint has no tensor {key}.")
        w = tensors[key]
        if tuple(w.shape) != tuple(mask.shape):
            raise RevivalError(f"Mask for {key} has shape {tuple(mask.shape)}, the weight {tuple(w.shape)}.")
        updates[key] = w.detach().clone().masked_fill_(mask.to(w.device, torch.bool), 0)
    return updates


# --------------------------------------------------------------------------- pipelines

def make_pipeline_call(pipeline, config: ConceptPruneConfig) -> Callable[[list[str], list[int]], object]:
    """A `call(prompts, seeds)` for the testbed pipeline or a diffusers StableDiffusionPipeline."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError:  # pragma: no cover - diffusers is a dependency
        DiffusionPipeline = ()
    from revival.model.loader import SDGenerator

    if isinstance(pipeline, SDGenerator):
        pipeline = pipeline.pipe
    if isinstance(pipeline, DiffusionPipeline):

        def call(prompts, seeds):
            kwargs = {}
            if config.inference_steps is not None:
                kwargs["num_inference_steps"] = config.inference_steps
            if config.guidance is not None:
                kwargs["guidance_scale"] = config.guidance
            # CPU generators: the same initial noise on every device (diffusers moves it)
            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            return pipeline(prompt=list(prompts), generator=gens, output_type="latent", **kwargs)
        return call

    def call(prompts, seeds):
        kwargs = {}
        if config.inference_steps is not None:
            kwargs["steps"] = config.inference_steps
        if config.guidance is not None:
            kwargs["guidance"] = config.guidance
        return pipeline(list(prompts), list(seeds), **kwargs)
    return call


# --------------------------------------------------------------------------- the method

@dataclass
class ConceptStatistics:
    """ConceptPrune's activation statistics of one (target, base) prompt pair on one UNet:
    per pruned weight key, a [steps, in] for the target and the base prompts. Masks for any
    skill ratio follow from them without running the model again (`masks`)."""

    weights: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    base: dict[str, torch.Tensor]
    n_target_prompts: int
    n_base_prompts: int
    seconds: dict[str, float] = field(default_factory=dict)

    def masks(self, config: ConceptPruneConfig) -> tuple[dict[str, torch.Tensor], ConceptPruneResult]:
        t0 = time.perf_counter()
        masks = conceptprune_masks(self.weights, self.target, self.base,
                                   skill_ratio=config.skill_ratio, steps=config.steps)
        result = UnlearnResult("conceptprune", config=asdict(config), n_target_prompts=self.n_target_prompts,
                                    n_base_prompts=self.n_base_prompts)
        result.add_masks(masks)
        result.seconds = {**self.seconds, "masks": time.perf_counter() - t0}
        return masks, result


def concept_statistics(pipeline, target_prompts: Sequence[str], base_prompts: Sequence[str],
                       config: ConceptPruneConfig = ConceptPruneConfig(), *, unet=None,
                       pipeline_call=None, progress: bool = False) -> ConceptStatistics:
    """Run the model on the target and the base prompts and keep ConceptPrune's statistics."""
    unet = unet if unet is not None else getattr(pipeline, "unet", None)
    if unet is None:
        raise RevivalError("The pipeline has no UNet to prune.")
    call = pipeline_call if pipeline_call is not None else make_pipeline_call(pipeline, config)
    seconds = {}

    def collect(prompts, label):
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(prompts), desc=f"conceptprune {label}", unit="prompt", leave=False)
        t0 = time.perf_counter()
        stats = collect_activations(
            call, unet, prompts, steps=config.steps, seed=config.seed,
            batch_size=config.batch_size, modules=config.modules, halves=config.halves,
            progress=(lambda n: bar.update(n - bar.n)) if bar is not None else None)
        seconds[f"collect_{label}"] = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return {f"{name}.weight": s.norms() for name, s in stats.items()}

    a_target = collect(list(target_prompts), "target")
    a_base = collect(list(base_prompts), "base")
    # a snapshot: the UNet's parameters may be overwritten later (e.g. to evaluate pruned states)
    weights = {f"{n}.weight": m.weight.detach().clone() for n, m in find_layers(unet, config.modules).items()}
    return ConceptStatistics(weights, a_target, a_base, len(target_prompts), len(base_prompts), seconds)


def conceptprune(pipeline, target_prompts: Sequence[str], base_prompts: Sequence[str],
                 config: ConceptPruneConfig = ConceptPruneConfig(), *, unet=None,
                 pipeline_call=None, progress: bool = False
                 ) -> tuple[dict[str, torch.Tensor], ConceptPruneResult]:
    """ConceptPrune masks for `pipeline` (testbed or diffusers SD; `pipeline.unet` is hooked).

    Returns (weight key -> bool mask [out, in], result). Apply them with `apply_masks` to the
    checkpoint's tensors (diffusers naming) -- the model itself is not modified.
    """
    stats = concept_statistics(pipeline, target_prompts, base_prompts, config, unet=unet,
                               pipeline_call=pipeline_call, progress=progress)
    return stats.masks(config)


# --------------------------------------------------------------------------- whole models
