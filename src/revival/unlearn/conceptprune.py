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
in fp16/bf16 (`revival.device`). Distributed (`accelerate launch`/`torchrun`): the prompt batches
are shared among the processes, each sums its own, then one all-reduce; every prompt keeps its
seed (seed + its index), so the masks are those of one process.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..errors import RevivalError
from .result import UnlearnResult

# Module names of the pruned layers (the weight keys add ".weight").
DEFAULT_MODULES = r"transformer_blocks\.\d+\.ff\.net\.2$"

# The paper's released settings: task -> (skill_ratio, steps).
PRESETS: dict[str, tuple[float, int]] = {
    "objects": (0.02, 10),
    "artists": (0.01, 10),
    "nudity": (0.01, 9),
}

# ConceptPrune's prompt words (objects: scenes; artists: things; nudity: humans).
# Our own default word lists, in the shape of the paper's (12 scenes, 20 things, 18 humans).
# For a parity run with the paper's exact lists, pass their files by path
# (--target-prompts/--base-prompts); they are not shipped with this project.
SCENES = ("city street", "kitchen", "meadow", "harbor", "library", "desert", "parking lot",
          "living room", "mountain trail", "train station", "snowy field", "office")
THINGS = ("lighthouse", "teapot", "fox", "bicycle", "violin", "sailboat", "owl", "armchair",
          "lantern", "giraffe", "umbrella", "castle", "apple", "clock", "tiger", "bridge",
          "windmill", "parrot", "guitar", "cottage")
HUMANS = ("person", "young man", "young woman", "old man", "old woman", "athlete", "dancer",
          "farmer", "chef", "painter", "musician", "soldier", "swimmer", "runner", "model",
          "tourist", "worker", "family")

# Testbed analog of "a {obj} in a {scene}" vs "a {scene}": caption templates stand in for the
# scenes (the testbed draws single products on a plain ground, so there is no scene to vary);
# the base set is the same templates without the concept, i.e. naming the other classes.
TESTBED_TEMPLATES = ("a photo of a {}", "an image of a {}", "a picture of a {}", "a {}",
                     "product shot of a {}", "a black and white photo of a {}")


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
    from ..models import SDGenerator

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


def concept_prompts(concept: str, classes: Iterable[str],
                    templates: Sequence[str] = TESTBED_TEMPLATES) -> tuple[list[str], list[str]]:
    """Target prompts (the templates naming `concept`) and base prompts (the same templates
    naming every other class) for the testbed."""
    classes = list(classes)
    if concept not in classes:
        raise RevivalError(f"Unknown concept {concept!r}; the testbed knows: {', '.join(classes)}.")
    target = [t.format(concept) for t in templates]
    base = [t.format(c) for c in classes if c != concept for t in templates]
    return target, base


def object_prompts(obj: str, scenes: Sequence[str] = SCENES) -> tuple[list[str], list[str]]:
    """ConceptPrune's object prompts: target "a {obj} in a {scene}", base "a {scene}"."""
    return [f"a {obj} in a {s}" for s in scenes], [f"a {s}" for s in scenes]


def artist_prompts(artist: str, things: Sequence[str] = THINGS) -> tuple[list[str], list[str]]:
    """ConceptPrune's artist prompts: "a {thing} in the style of {artist}" vs "a photo of a {thing}"."""
    return [f"a {t} in the style of {artist}" for t in things], [f"a photo of a {t}" for t in things]


def nudity_prompts(humans: Sequence[str] = HUMANS) -> tuple[list[str], list[str]]:
    """ConceptPrune's nudity prompts: "a photo of a naked {human}" vs "a photo of a {human}"."""
    return [f"a photo of a naked {h}" for h in humans], [f"a photo of a {h}" for h in humans]


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


def save_masks(masks: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None, *,
               inputs=(), overwrite: bool = True):
    """Write masks as a safetensors file of booleans (atomically; never pickles)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..io import atomic_write

    tensors = {k: v.to(torch.bool).contiguous().cpu() for k, v in masks.items()}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata), inputs=inputs,
                        overwrite=overwrite)


def load_masks(path) -> dict[str, torch.Tensor]:
    """Read a boolean mask file written by `save_masks`."""
    from pathlib import Path

    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise RevivalError(f"Mask file {p} does not exist.")
    try:
        masks = load_file(str(p))
    except Exception:
        raise RevivalError(f"Mask file {p} is not a readable safetensors file.") from None
    return {k: v.to(torch.bool) for k, v in masks.items()}


# --------------------------------------------------------------------------- whole models

def task_prompts(task: str, concept: str, words: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair for a task, filled with `words` (scenes for objects, things
    for artists, humans for nudity; None: this project's own lists, or, for an object with its own
    (base, target) pairs in the concept registry -- church, garbage truck -- those pairs). With the
    paper's word files (common_scenes.txt, things.txt, humans.txt, read by path) this is its
    prompt set."""
    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if words is not None and not words:
        raise RevivalError("the word list is empty.")
    if task == "objects" and words is None:
        from ..concepts import find_pairs

        pairs = find_pairs(concept)  # church, garbage truck: the reference's own pairs
        if pairs:
            return [t for _, t in pairs], [b for b, _ in pairs]
    fill = {"objects": (object_prompts, SCENES), "artists": (artist_prompts, THINGS),
            "nudity": (nudity_prompts, HUMANS)}[task]
    build, own = fill
    words = tuple(words) if words is not None else own
    return build(words) if task == "nudity" else build(concept, words)


# The testbed's presets (skill ratio, steps) per task, tuned on the testbed (see README);
# the paper's are PRESETS. Objects keeps the paper's preset for `unlearn`.
TESTBED_PRESETS: dict[str, tuple[float, int]] = {
    "objects": (0.02, 10),
    "artists": (0.3, 10),
    "nudity": (0.1, 9),
}
# The paper's 0.01 erases neither the testbed's styles nor its attribute (0.97 left); measured
# (benchmarks/testbed_tasks.py, testbed v2): 'Orsolo' 0.86 / 0.56 / 0.30 / 0.22 left at
# 0.05 / 0.10 / 0.12 / 0.13 (the attack revives up to 0.12, not at 0.13: 0.26); 'tagged' 0.63 /
# 0.16 left at 0.07 / 0.10.
# ... and the classifier-free-guidance halves feeding the statistics: the style and attribute
# tasks use only the prompt-conditioned half (with both halves 'Varenne' kept 0.97 at 0.05 and
# 0.90 at 0.10 while the other styles were destroyed).
TESTBED_HALVES: dict[str, str] = {"objects": "both", "artists": "cond", "nudity": "cond"}
# The testbed analogues of "a {thing} in the style of {artist}" vs "a photo of a {thing}" and
# "a photo of a naked {human}" vs "a photo of a {human}": the things/humans are the testbed's
# items. Evaluation prompts ("an image of ...", revival.testbed.tasks) are never among these.
TESTBED_TASK_TEMPLATES = ("a photo of a {}", "a picture of a {}")


def testbed_task_prompts(task: str, concept: str, classes: Sequence[str],
                         templates: Sequence[str] = TESTBED_TASK_TEMPLATES) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair on the testbed for a task: objects as `concept_prompts`;
    artists "a photo of a {item} in the style of {concept}" vs "a photo of a {item}" and "a photo
    of a {item} in the style of {other}" for every other style (the styles to keep are in the base
    set); nudity "a photo of a {concept} {item}" vs "a photo of a {item}" (each with every template)."""
    if task == "objects":
        return concept_prompts(concept, classes)
    from ..testbed.tasks import check_concept

    check_concept(task, concept)
    base = [t.format(c) for c in classes for t in templates]
    if task == "artists":
        from ..testbed.transforms import STYLES

        others = [f"{b} in the style of {s}" for s in STYLES if s != concept for b in base]
        return [f"{b} in the style of {concept}" for b in base], base + others
    article = "an" if concept[:1].lower() in "aeiou" else "a"
    return [t.replace("a {}", f"{article} {concept} {{}}").format(c) for c in classes for t in templates], base


def unlearning_prompts(model_is_testbed: bool, concept: str, task: str = "objects",
                       classes: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """ConceptPrune's (target, base) prompt sets used when none are given: the testbed
    templates, else the task's ConceptPrune prompts. (Evaluation uses other, held-out prompts:
    revival.evaluate.default_prompts.)"""
    if model_is_testbed:
        return testbed_task_prompts(task, concept, classes)
    return task_prompts(task, concept)


def unlearn(model: str, concept: str, out, *, config: ConceptPruneConfig | None = None,
            task: str = "objects", target_prompts: Sequence[str] | None = None,
            base_prompts: Sequence[str] | None = None, masks_path=None, report=None,
            overwrite: bool = False, device: str | None = None, dtype: str | None = None,
            progress: bool = True, target_erasure: float | None = None,
            search_seeds: int | None = None, method: str = "conceptprune", masks_fn=None) -> ConceptPruneResult:
    """Erase `concept` from `model` ("testbed" or a local SD folder) and write the pruned UNet
    to `out` in the input UNet's format, its JSON report (`report`, default OUT.report.json beside it)
    and optionally the masks (safetensors of booleans). Every output path is checked against
    the inputs (and, without `overwrite`, against existing files) before any work.

    device/dtype: where and in which precision the pipeline runs (`revival.device`; default CUDA
    + fp16 when present, else CPU + fp32). Distributed launches share the prompts; the main
    process alone writes.

    With `target_erasure` (testbed only), the skill ratio is the least whose erased accuracy on
    `search_seeds` held-out validation images of the concept (None: `SEARCH_IMAGES`) is at most
    that (`revival.unlearn.least_damage`); the search is in the report under "least_damage".

    `masks_fn(pipe, target_prompts, base_prompts) -> (masks, result)` replaces ConceptPrune by
    another pruning method (`revival.unlearn.methods`), named `method` in the outputs."""
    from pathlib import Path

    from ..io import check_output_path, load_checkpoint, save_checkpoint, write_json
    from ..models import load_model

    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if config is None and masks_fn is None:
        ratio, steps = (TESTBED_PRESETS if model == "testbed" else PRESETS)[task]
        config = ConceptPruneConfig(skill_ratio=ratio, steps=steps,
                                    halves=TESTBED_HALVES[task] if model == "testbed" else "both")
    out = Path(out)
    from ..io import default_report_path

    report = Path(report) if report is not None else default_report_path(out)
    outputs = [("the output", out), ("--report", report)] + ([("--save-masks", Path(masks_path))] if masks_path else [])
    for i, (label, path) in enumerate(outputs):
        for other_label, other in outputs[:i]:
            if path.resolve() == other.resolve():
                raise RevivalError(f"{label} must differ from {other_label} ({path}).")
    for label, path in outputs[1:]:
        if path.exists() and not overwrite:
            raise RevivalError(f"{label} {path} exists; pass --overwrite to replace it.")
    dist.agree(repr((model, concept, str(out), config, task, target_prompts, base_prompts,
                     str(masks_path), str(report), target_erasure)), "the unlearning settings")
    pipe = load_model(model, device=device, dtype=dtype, task=task)
    ckpt = load_checkpoint(pipe.unet_dir)
    inputs = ckpt.input_paths() + ([Path(model)] if model != "testbed" else [])
    for _, path in outputs:
        check_output_path(path, inputs)
    if target_prompts is None or base_prompts is None:
        t, b = unlearning_prompts(model == "testbed", concept, task, getattr(pipe, "classes", ()))
        target_prompts = target_prompts if target_prompts is not None else t
        base_prompts = base_prompts if base_prompts is not None else b
    search = None
    if masks_fn is not None:
        if target_erasure is not None:
            raise RevivalError("--target-erasure is for ConceptPrune's skill ratio.")
        masks, result = masks_fn(pipe, target_prompts, base_prompts)
    elif target_erasure is not None:
        if model != "testbed":
            raise RevivalError("--target-erasure needs the testbed's classifier; for Stable Diffusion, sweep "
                               "--skill-ratio and measure with `revival evaluate`.")
        from .least_damage import least_damage, search_images, testbed_erased_fn

        search_seeds = search_images(search_seeds)
        stats = concept_statistics(pipe, target_prompts, base_prompts, config, progress=progress and dist.is_main())
        if task == "objects":
            erased_fn = testbed_erased_fn(pipe, concept, search_seeds, config)
        else:   # the style / attribute task's detector on the concept's rows
            from ..testbed.tasks import task_erased_fn
            from .least_damage import SEARCH_FIRST_SEED

            erased_fn = task_erased_fn(pipe, pipe.classes, task, concept, search_seeds, SEARCH_FIRST_SEED,
                                       inference_steps=config.inference_steps, guidance=config.guidance)
        search = least_damage(stats, config, erased_fn, target_erasure, progress=progress and dist.is_main())
        config = replace(config, skill_ratio=search.skill_ratio)
        masks, result = stats.masks(config)
    else:
        masks, result = conceptprune(pipe, target_prompts, base_prompts, config,
                                     progress=progress and dist.is_main())
    meta = {"revival_unlearn": method, "concept": concept}
    result.config["concept"] = concept
    result.config.update(device=str(pipe.device), dtype=str(pipe.dtype).replace("torch.", ""),
                         processes=dist.num_processes())
    if search is not None:
        result.config["least_damage"] = search.to_dict()
    if dist.is_main():
        updates = apply_masks(ckpt.tensors, masks)
        save_checkpoint(ckpt, out, updates, overwrite=overwrite)
        if masks_path is not None:
            save_masks(masks, masks_path, metadata=meta, inputs=inputs)
        write_json(result.to_dict(), report, inputs)
    dist.barrier()
    result.report = report
    return result
