"""`revival unlearn`: a pruning method's masks -> the pruned UNet written, with its report.

The orchestration above the methods (`revival.unlearn`): it picks ConceptPrune's prompt sets
(the testbed's task templates, or the task's prompts on Stable Diffusion), runs the least-damage
search on the testbed (`revival.unlearn.least_damage`, with an erased-accuracy function measured
here by the testbed classifier or the task's detector), and writes the outputs. `erase` does the
same for the fine-tuning erasures (`revival.unlearn.erasures.ERASURES`): data, training, the
whole UNet written.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from revival.runtime import distributed as dist
from revival.concepts.catalog import task_prompts
from revival.errors import RevivalError
from revival.unlearn.conceptprune import ConceptPruneConfig, ConceptPruneResult, apply_masks, concept_statistics, conceptprune
from revival.unlearn.least_damage import SEARCH_FIRST_SEED
from revival.unlearn.masks_io import save_masks
from revival.unlearn.methods import METHODS, make_masks
from revival.unlearn.prompt_sets import PRESETS, TESTBED_HALVES, TESTBED_PRESETS, testbed_task_prompts


def testbed_erased_fn(pipeline, concept: str, seeds: int, config: ConceptPruneConfig,
                      first_seed: int = SEARCH_FIRST_SEED) -> Callable[[dict[str, torch.Tensor]], float]:
    """erased_fn for the testbed: load the pruned weights into `pipeline.unet`, draw `seeds`
    held-out validation images of `concept` (seeds first_seed..), classify with the testbed CNN.
    The UNet's own weights are restored after each probe."""
    from revival.evaluate.classifiers import get_classifier
    from revival.evaluate.evaluate import evaluate_concept
    from revival.evaluate.prompts import default_prompts

    unet = pipeline.unet
    classifier = get_classifier("testbed")
    rows = default_prompts([concept], seeds, first_seed)

    def erased(masks: dict[str, torch.Tensor]) -> float:
        original = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        try:
            unet.load_state_dict({**original, **apply_masks(original, masks)})
            res = evaluate_concept(pipeline, rows, classifier, concept, steps=config.inference_steps,
                                   guidance=config.guidance)
        finally:
            unet.load_state_dict(original)
        return res.erased_accuracy

    return erased


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

    device/dtype: where and in which precision the pipeline runs (`revival.runtime.device`; default CUDA
    + fp16 when present, else CPU + fp32). Distributed launches share the prompts; the main
    process alone writes.

    With `target_erasure` (testbed only), the skill ratio is the least whose erased accuracy on
    `search_seeds` held-out validation images of the concept (None: `SEARCH_IMAGES`) is at most
    that (`revival.unlearn.least_damage`); the search is in the report under "least_damage".

    `masks_fn(pipe, target_prompts, base_prompts) -> (masks, result)` replaces ConceptPrune by
    another pruning method (`revival.unlearn.methods`), named `method` in the outputs."""
    from pathlib import Path

    from revival.io import check_output_path, load_checkpoint, save_checkpoint, write_json
    from revival.model.loader import load_model

    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if config is None and masks_fn is None:
        ratio, steps = (TESTBED_PRESETS if model == "testbed" else PRESETS)[task]
        config = ConceptPruneConfig(skill_ratio=ratio, steps=steps,
                                    halves=TESTBED_HALVES[task] if model == "testbed" else "both")
    out = Path(out)
    from revival.io import default_report_path

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
        from revival.unlearn.least_damage import least_damage, search_images

        search_seeds = search_images(search_seeds)
        stats = concept_statistics(pipe, target_prompts, base_prompts, config, progress=progress and dist.is_main())
        if task == "objects":
            erased_fn = testbed_erased_fn(pipe, concept, search_seeds, config)
        else:   # the style / attribute task's detector on the concept's rows
            from revival.testbed.tasks import task_erased_fn

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


def unlearn_method(method: str, model: str, concept: str, out, *, task: str = "objects",
                   target_prompts: Sequence[str] | None = None, base_prompts: Sequence[str] | None = None,
                   masks_path=None, report=None, overwrite: bool = False, device: str | None = None,
                   dtype: str | None = None, progress: bool = True, **options):
    """Erase `concept` from `model` ("testbed" or a local SD folder) with `method` and write the
    pruned UNet to `out` in the input UNet's format, its report and optionally the masks --
    the outputs, checks and distributed handling of `unlearn`. `options` go to
    `make_masks` (ratio, steps, modules, seed, inference_steps). Returns the method's result."""
    if method not in METHODS:
        raise RevivalError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    return unlearn(model, concept, out, task=task, target_prompts=target_prompts, base_prompts=base_prompts,
                   masks_path=masks_path, report=report, overwrite=overwrite, device=device, dtype=dtype,
                   progress=progress, method=method,
                   masks_fn=lambda pipe, t, b: make_masks(method, pipe, t, b, progress=progress, **options))


def erase(method: str, model, concept: str, out, *, config, task: str = "objects", report=None,
          overwrite: bool = False, device: str | None = None, dtype: str | None = None, progress: bool = True,
          anchor_prompt: str | None = None, images: int | None = None, inference_steps: int | None = None) -> dict:
    """Erase `concept` from `model` ("testbed" or a local SD folder) by fine-tuning erasure `method`
    and write the whole trained UNet to `out` in the input UNet's format, with a JSON report beside
    it (`report`, default OUT.report.json). The outputs are checked before the model is loaded.

    Data: the testbed's train split (`testbed_data`, `images` per class, default 1000), or on SD
    images the original draws itself (`sd_data`: `images` per part, default 8, `inference_steps`
    default 25; retain prompts: the task's base prompts). The anchor is `anchor_prompt`, else
    `config.anchor`. The UNet is trained in float32 (fp16 weights cannot take AdamW's small
    updates) and stored in the checkpoint's dtypes. One process: the same seed gives the same
    bytes (robust: with a fixed `config.secret_seed`). Returns the report with "out" and "report" (its path) added."""
    import sys
    import time
    from pathlib import Path

    from revival.model.denoise import Denoiser
    from revival.io import check_output_path, load_checkpoint, plan_outputs, save_checkpoint, tensor_meta, write_json
    from revival.model.loader import load_model
    from revival.unlearn.erasures import ERASURES, ErasureConfig, check_testbed_names, sd_data, testbed_data

    member = ERASURES.get(method)
    if not isinstance(config, ErasureConfig):
        raise RevivalError(f"config must be an ErasureConfig, got {type(config).__name__}.")
    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    for name, v in (("--images", images), ("--inference-steps", inference_steps)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise RevivalError(f"{name} must be a positive integer, got {v!r}.")
    if dist.num_processes() > 1:
        raise RevivalError("a fine-tuning erasure runs in one process; launch it without accelerate or torchrun.")
    testbed = str(model) == "testbed"
    if not testbed and not ((Path(model) / "model_index.json").is_file() and (Path(model) / "unet").is_dir()):
        raise RevivalError(f"{model} is not a local diffusers pipeline folder (model_index.json and unet/ are needed).")
    from revival.testbed import testbed_unet_dir

    anchor = anchor_prompt if anchor_prompt is not None else config.anchor
    if testbed:
        check_testbed_names(concept, anchor)
    ckpt = load_checkpoint(testbed_unet_dir(task) if testbed else Path(model) / "unet")
    inputs = ckpt.input_paths() + ([] if testbed else [Path(model)])
    out, report = plan_outputs(ckpt, out, report, overwrite=overwrite)
    for path in (out, report):
        check_output_path(path, inputs)
    start = time.perf_counter()
    pipe = load_model(model, device=device, dtype=dtype, task=task)
    d = Denoiser(pipe)
    if testbed:
        data = testbed_data(d, concept, anchor, per_class=1000 if images is None else images, seed=config.seed)
        source = {"source": "Fashion-MNIST train split"}
    else:
        steps = 25 if inference_steps is None else inference_steps
        data = sd_data(d, concept, anchor or "a photo", task_prompts(task, concept)[1], images=8 if images is None else images,
                       steps=steps, seed=config.seed)
        source = {"source": "generated by the original model", "inference_steps": steps}
    pipe.unet.float()
    log = (lambda m: print(f"{method}: {m}", file=sys.stderr)) if progress else None
    trained = member(pipe, data, config, log)
    state = pipe.unet.state_dict()
    missing = sorted(set(state) - set(ckpt.tensors))
    if missing:
        raise RevivalError(f"the trained UNet has tensors its checkpoint lacks (e.g. {missing[0]!r}); nothing written.")
    updates = {k: state[k].detach().to(device="cpu", dtype=tensor_meta(ckpt.tensors, k)[0]) for k in state}
    bad = next((k for k, v in updates.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise RevivalError(f"the erasure left NaN/inf weights in {bad!r} (lower --lr); nothing written.")
    result = {"method": method, "concept": concept, "model": str(model), "task": task, "config": config.to_dict(),
              "data": {**data.describe(), **source}, "erasure": trained,
              "seconds": round(time.perf_counter() - start, 2), "device": str(pipe.device)}
    save_checkpoint(ckpt, out, updates, overwrite=overwrite)
    write_json(result, report, inputs)
    return {**result, "out": str(out), "report": str(report)}
