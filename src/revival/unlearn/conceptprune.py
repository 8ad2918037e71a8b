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
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from ..errors import RevivalError

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


@dataclass
class ConceptPruneResult:
    """What ConceptPrune did: per layer pruned counts, the settings, timings."""

    config: dict
    n_target_prompts: int
    n_base_prompts: int
    layers: dict[str, dict] = field(default_factory=dict)  # weight key -> shape, pruned, fraction
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def pruned(self) -> int:
        return sum(v["pruned"] for v in self.layers.values())

    @property
    def total(self) -> int:
        return sum(v["numel"] for v in self.layers.values())

    def to_dict(self) -> dict:
        return {
            "method": "conceptprune",
            "config": dict(self.config),
            "n_target_prompts": self.n_target_prompts,
            "n_base_prompts": self.n_base_prompts,
            "layers": {k: dict(v) for k, v in self.layers.items()},
            "totals": {"pruned": self.pruned, "numel": self.total,
                       "fraction": self.pruned / self.total if self.total else 0.0},
            "seconds": dict(self.seconds),
        }


# --------------------------------------------------------------------------- statistics

class _StopCollection(Exception):
    """Raised by the UNet hook once the last needed step has run (ends the pipeline call)."""


class LayerStats:
    """Accumulator for one Linear layer (sparsegpt style: `add_batch`, then read `norms`).

    Holds, per step, the sum over tokens of squared L2-normalised activations per input
    column, and the token count.
    """

    def __init__(self, in_features: int, steps: int):
        self.sq = torch.zeros(steps, in_features, dtype=torch.float64)
        self.tokens = torch.zeros(steps, dtype=torch.float64)

    def add_batch(self, step: int, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        x = F.normalize(x, dim=-1)
        self.sq[step] += (x * x).sum(0).double().cpu()
        self.tokens[step] += x.shape[0]

    def norms(self) -> torch.Tensor:
        """a[step, column] = sqrt(mean over tokens of the squared normalised activation)."""
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
    half of a CFG-doubled batch (the conditional one).
    """
    prompts = list(prompts)
    if not prompts:
        raise RevivalError("The prompt list is empty.")
    layers = find_layers(unet, modules)
    stats = {name: LayerStats(m.in_features, steps) for name, m in layers.items()}
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
            for start in range(0, len(prompts), batch_size):
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
        s.norms()  # refuses statistics with an empty step (the pipeline ran too few steps)
    return stats


# --------------------------------------------------------------------------- masks

def step_mask(weight: torch.Tensor, a_target: torch.Tensor, a_base: torch.Tensor,
              skill_ratio: float) -> torch.Tensor:
    """One (step, layer) mask: per row the top-k columns by |W|*a_target, where also
    |W|*a_target > |W|*a_base. k = int(skill_ratio * in_features). Ties: lower column first."""
    w = weight.detach().abs().float()
    s_target = w * a_target.float()[None, :]
    s_base = w * a_base.float()[None, :]
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
    Returns weight key -> bool mask [out, in] (True = prune).
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
        mask = torch.zeros(w.shape, dtype=torch.bool)
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
    if isinstance(pipeline, DiffusionPipeline):
        device = getattr(pipeline, "device", torch.device("cpu"))

        def call(prompts, seeds):
            kwargs = {}
            if config.inference_steps is not None:
                kwargs["num_inference_steps"] = config.inference_steps
            if config.guidance is not None:
                kwargs["guidance_scale"] = config.guidance
            gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
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


def read_prompts(path) -> list[str]:
    """One prompt per non-empty line of a text file."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise RevivalError(f"Prompt file {p} does not exist.")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RevivalError(f"Prompt file {p} is not UTF-8 text.") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise RevivalError(f"Prompt file {p} holds no prompts.")
    return prompts


# --------------------------------------------------------------------------- the method

def conceptprune(pipeline, target_prompts: Sequence[str], base_prompts: Sequence[str],
                 config: ConceptPruneConfig = ConceptPruneConfig(), *, unet=None,
                 pipeline_call=None, progress: bool = False
                 ) -> tuple[dict[str, torch.Tensor], ConceptPruneResult]:
    """ConceptPrune masks for `pipeline` (testbed or diffusers SD; `pipeline.unet` is hooked).

    Returns (weight key -> bool mask [out, in], result). Apply them with `apply_masks` to the
    checkpoint's tensors (diffusers naming) -- the model itself is not modified.
    """
    unet = unet if unet is not None else getattr(pipeline, "unet", None)
    if unet is None:
        raise RevivalError("The pipeline has no UNet to prune.")
    call = pipeline_call if pipeline_call is not None else make_pipeline_call(pipeline, config)
    seconds = {}
    bars = []

    def collect(prompts, label):
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(prompts), desc=f"conceptprune {label}", unit="prompt", leave=False)
            bars.append(bar)
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
    t0 = time.perf_counter()
    weights = {f"{n}.weight": m.weight for n, m in find_layers(unet, config.modules).items()}
    masks = conceptprune_masks(weights, a_target, a_base,
                               skill_ratio=config.skill_ratio, steps=config.steps)
    seconds["masks"] = time.perf_counter() - t0
    result = ConceptPruneResult(config=asdict(config), n_target_prompts=len(target_prompts),
                                n_base_prompts=len(base_prompts))
    for key, m in masks.items():
        n = int(m.sum())
        result.layers[key] = {"shape": list(m.shape), "pruned": n, "numel": m.numel(),
                              "fraction": n / m.numel()}
    result.seconds = seconds
    return masks, result


def save_masks(masks: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None):
    """Write masks as a safetensors file of booleans (atomically; never pickles)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..report import _atomic_write

    tensors = {k: v.to(torch.bool).contiguous().cpu() for k, v in masks.items()}
    return _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


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

def load_model(model: str = "testbed", device: str | None = None):
    """(pipeline, UNet checkpoint path) for "testbed" or a local diffusers SD pipeline folder."""
    from pathlib import Path

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if model == "testbed":
        from ..testbed import TESTBED_UNET_DIR, load_pipeline

        return load_pipeline(device=device), Path(TESTBED_UNET_DIR)
    path = Path(model)
    if not (path / "model_index.json").is_file() or not (path / "unet").is_dir():
        raise RevivalError(f"{path} is not a local diffusers pipeline folder (model_index.json and unet/ are needed).")
    try:
        from diffusers import StableDiffusionPipeline

        kwargs = {} if device == "cpu" else {"torch_dtype": torch.float16}
        pipe = StableDiffusionPipeline.from_pretrained(
            path, local_files_only=True, safety_checker=None, requires_safety_checker=False, **kwargs)
    except Exception as exc:  # diffusers raises many types for broken folders
        raise RevivalError(f"Could not load the Stable Diffusion pipeline in {path} ({type(exc).__name__}).") from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, path / "unet"


def task_prompts(task: str, concept: str, words: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair for a task, filled with `words` (scenes for objects, things
    for artists, humans for nudity; None: this project's own lists). With the paper's word files
    (common_scenes.txt, things.txt, humans.txt, read by path) this is its prompt set."""
    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if words is not None and not words:
        raise RevivalError("the word list is empty.")
    fill = {"objects": (object_prompts, SCENES), "artists": (artist_prompts, THINGS),
            "nudity": (nudity_prompts, HUMANS)}[task]
    build, own = fill
    words = tuple(words) if words is not None else own
    return build(words) if task == "nudity" else build(concept, words)


# The testbed's presets (skill ratio, steps) per task, tuned on the testbed (see README);
# the paper's are PRESETS. Objects keeps the paper's preset for `unlearn`.
TESTBED_PRESETS: dict[str, tuple[float, int]] = {
    "objects": (0.02, 10),
    "artists": (0.12, 10),
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
    artists "a photo of a {item} in the style of {concept}" vs "a photo of a {item}"; nudity
    "a photo of a {concept} {item}" vs "a photo of a {item}" (each with every template)."""
    if task == "objects":
        return concept_prompts(concept, classes)
    from ..testbed.tasks import check_concept

    check_concept(task, concept)
    base = [t.format(c) for c in classes for t in templates]
    if task == "artists":
        return [f"{b} in the style of {concept}" for b in base], base
    article = "an" if concept[:1].lower() in "aeiou" else "a"
    return [t.replace("a {}", f"{article} {concept} {{}}").format(c) for c in classes for t in templates], base


def default_prompts(model_is_testbed: bool, concept: str, task: str = "objects",
                    classes: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The prompt sets used when none are given: testbed templates, else ConceptPrune's."""
    if model_is_testbed:
        return testbed_task_prompts(task, concept, classes)
    return task_prompts(task, concept)


def unlearn(model: str, concept: str, out, *, config: ConceptPruneConfig | None = None,
            task: str = "objects", target_prompts: Sequence[str] | None = None,
            base_prompts: Sequence[str] | None = None, masks_path=None,
            device: str | None = None, progress: bool = True) -> ConceptPruneResult:
    """Erase `concept` from `model` ("testbed" or a local SD folder) and write the pruned UNet
    to `out` in the input UNet's format; optionally the masks (safetensors of booleans)."""
    from pathlib import Path

    from ..io import check_output_path, load_checkpoint, save_checkpoint

    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if config is None:
        ratio, steps = (TESTBED_PRESETS if model == "testbed" else PRESETS)[task]
        config = ConceptPruneConfig(skill_ratio=ratio, steps=steps,
                                    halves=TESTBED_HALVES[task] if model == "testbed" else "both")
    out = Path(out)
    if masks_path is not None and Path(masks_path).resolve() == out.resolve():
        raise RevivalError("--save-masks must differ from the output path.")
    pipe, unet_dir = load_model(model, device)
    ckpt = load_checkpoint(unet_dir)
    inputs = ckpt.input_paths() + ([Path(model)] if model != "testbed" else [])
    check_output_path(out, inputs)
    if masks_path is not None:
        check_output_path(masks_path, inputs)
    if target_prompts is None or base_prompts is None:
        t, b = default_prompts(model == "testbed", concept, task, getattr(pipe, "classes", ()))
        target_prompts = target_prompts if target_prompts is not None else t
        base_prompts = base_prompts if base_prompts is not None else b
    masks, result = conceptprune(pipe, target_prompts, base_prompts, config, progress=progress)
    updates = apply_masks(ckpt.tensors, masks)
    meta = {"revival_unlearn": "conceptprune", "concept": concept}
    save_checkpoint(ckpt, out, updates)
    if masks_path is not None:
        save_masks(masks, masks_path, metadata=meta)
    result.config["concept"] = concept
    return result
