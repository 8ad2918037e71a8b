"""`revival demo`: the paper end to end on the embedded testbed, in-process.

    original --ConceptPrune--> unlearned --attack--> revived
                                  |
                                  +--Gaussian obfuscation--> obfuscated --attack--> obfuscated_revived

Each of the five models is evaluated (erased-concept accuracy and preserved accuracy of the
testbed classifier on generated images); the attack's signs on the unlearned model are scored
against the original weights. Models are swapped by loading state dicts into the one UNet;
nothing is written but the report files:

    DIR/report.json  {"concept", "accuracy": {"erased": {...}, "preserved": {...}},
                      "sign_recovery": {"all", "kept"}, "timings": {stage: seconds}}
    DIR/report.md    the table
    DIR/grid.png     rows: the five stages; columns: erased-concept and preserved-concept images
    DIR/bars.png     erased / preserved accuracy per stage
    DIR/details.json everything else (settings, per-layer results, per-class accuracy)
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .errors import RevivalError
from .report import STAGES, STAGE_LABELS, bar_plot, image_grid, markdown_table, validate_report, write_json, write_markdown


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo.

    concept: the testbed class erased. preserved_concept: the class shown beside it in the grid
    (None: the first other class). seeds_per_class: evaluation images per class (all 10
    classes). grid_seeds: images per concept in the grid. skill_ratio / unlearn_steps:
    ConceptPrune (see DEFAULT_* for the demo's defaults and why). keep / magnitude / solver:
    the attack (None: the attack's own defaults). obfuscate_stats: "row" | "layer".
    inference_steps / guidance: sampler settings (None: the testbed's defaults).
    classes: restrict evaluation to these classes (None: all; the test suite uses a few).
    modules: regex over UNet module names that ConceptPrune prunes (None: the paper's ff.net.2);
        the attack, the defense and the scoring then work on exactly the pruned layers.
    """

    concept: str = "sneaker"
    preserved_concept: str | None = None
    seeds_per_class: int = 20
    grid_seeds: int = 4
    skill_ratio: float = 0.05  # the paper's 0.02 erases little on the testbed (0.85 left); see README
    unlearn_steps: int = 10
    keep: float | None = None
    magnitude: str | None = None
    solver: str | None = None
    obfuscate_stats: str = "row"
    seed: int = 0
    inference_steps: int | None = None
    guidance: float | None = None
    classes: tuple[str, ...] | None = None
    modules: str | None = None
    task: str = "objects"  # objects | artists | nudity (revival.testbed.tasks)
    halves: str = "both"   # ConceptPrune's CFG halves (the style/attribute tasks: "cond")

    def __post_init__(self) -> None:
        if not isinstance(self.seeds_per_class, int) or self.seeds_per_class < 1:
            raise RevivalError(f"--seeds-per-class must be a positive integer, got {self.seeds_per_class!r}.")
        if not isinstance(self.grid_seeds, int) or self.grid_seeds < 1:
            raise RevivalError(f"grid_seeds must be a positive integer, got {self.grid_seeds!r}.")
        if self.obfuscate_stats not in ("row", "layer"):
            raise RevivalError(f"obfuscate_stats must be 'row' or 'layer', got {self.obfuscate_stats!r}.")

    @classmethod
    def make(cls, concept: str | None = "sneaker", quick: bool = False, task: str = "objects",
             **overrides) -> "DemoConfig":
        """The default demo, or with `quick` a smaller run (fewer evaluation images)."""
        if task != "objects":
            from .testbed.tasks import task_demo_config
            return task_demo_config(cls, task, concept, quick, **overrides)
        base = cls(concept=concept or "sneaker")
        if quick:
            base = replace(base, seeds_per_class=8, grid_seeds=3)
        return replace(base, **overrides)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


class _Timer:
    def __init__(self):
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.timings[name] = timer.timings.get(name, 0.0) + time.perf_counter() - self_inner.t0
                return False
        return _Ctx()


def _sign_recovery(original, unlearned, revived, layers) -> dict:
    """`revival.metrics.score` of the revived model: sign accuracy over all pruned positions
    (the paper's "sign recovery"; unrevived ones count wrong) and over the kept top-K."""
    import math

    from .metrics import score

    res = score(original, unlearned, revived, layers)
    tot = res.total
    fix = lambda v: 0.0 if math.isnan(v) else float(v)  # noqa: E731
    return {"all": fix(tot.sign_acc_all), "kept": fix(tot.sign_acc_kept), "score": res.to_dict()}


def run_demo(config: DemoConfig = DemoConfig(), out_dir="out/demo", *, progress: bool = True,
             pipeline=None, evaluator: Callable | None = None) -> dict:
    """Run the demo; write the report files into `out_dir`; return the report dict.

    `pipeline` (default: the embedded testbed) and `evaluator` (default: the testbed
    classifier through `revival.evaluate`) may be replaced, e.g. by the test suite.
    `evaluator(pipeline, classes, concept, seeds_per_class, config)` -> (erased accuracy,
    preserved accuracy, per-class dict, {class: images [n, C, H, W]}).
    """
    from .attack.revive import AttackConfig, revive
    from .layers import select_layers
    from .defense.obfuscate import obfuscate
    from .unlearn.conceptprune import ConceptPruneConfig, apply_masks, conceptprune, testbed_task_prompts

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RevivalError(f"--out {out_dir} is a file, not a folder.")
    t_start = time.perf_counter()
    tm = _Timer()
    with tm("load"):
        if pipeline is None:
            from .testbed import load_pipeline

            pipeline = load_pipeline()
        if config.task != "objects":
            from .testbed.tasks import task_demo_setup
            classes, preserved, evaluator = task_demo_setup(config, pipeline, evaluator)
        evaluator = evaluator or testbed_evaluator
    if config.task == "objects":
        classes = list(config.classes or pipeline.classes)
    unknown = [c for c in classes if c not in pipeline.classes]
    if unknown:
        raise RevivalError(f"Unknown class {unknown[0]!r}; the testbed knows: {', '.join(pipeline.classes)}.")
    if config.task == "objects" and config.concept not in classes:
        raise RevivalError(f"Unknown concept {config.concept!r}; the testbed knows: {', '.join(classes)}.")
    if config.task == "objects":
        preserved = config.preserved_concept or next(c for c in classes if c != config.concept)
    if config.task == "objects" and (preserved not in classes or preserved == config.concept):
        raise RevivalError(f"preserved_concept must be another class than {config.concept!r}.")

    unet = pipeline.unet
    original = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    layers = select_layers(original)  # ff.net.2; replaced by the pruned layers below
    attack_kwargs = {k: v for k, v in (("keep", config.keep), ("magnitude", config.magnitude),
                                       ("solver", config.solver)) if v is not None}
    attack_cfg = AttackConfig(seed=config.seed, **attack_kwargs)
    cp_kwargs = {"modules": config.modules} if config.modules else {}
    cp_cfg = ConceptPruneConfig(skill_ratio=config.skill_ratio, steps=config.unlearn_steps,
                                seed=config.seed, inference_steps=config.inference_steps,
                                guidance=config.guidance, halves=config.halves, **cp_kwargs)
    acc = {"erased": {}, "preserved": {}}
    per_class, grid = {}, {}
    details: dict = {"config": asdict(config), "attack_config": asdict(attack_cfg)}

    def evaluate(stage: str, state: dict[str, torch.Tensor]) -> None:
        unet.load_state_dict(state)
        with tm(f"evaluate_{stage}"):
            e, p, table, images = evaluator(pipeline, classes, config.concept, config.seeds_per_class, config)
        acc["erased"][stage], acc["preserved"][stage] = float(e), float(p)
        per_class[stage] = table
        n = min(config.grid_seeds, len(images[config.concept]), len(images[preserved]))
        grid[stage] = torch.cat([images[config.concept][:n], images[preserved][:n]])
        _log(progress, f"  {STAGE_LABELS[stage]:<26} erased {e:.3f}  preserved {p:.3f}")

    try:
        _log(progress, f"[1/5] evaluating the original testbed model ({config.seeds_per_class} images per class)")
        evaluate("original", original)

        _log(progress, f"[2/5] ConceptPrune: erasing '{config.concept}' "
                       f"(skill ratio {config.skill_ratio}, first {config.unlearn_steps} steps)")
        target, base = testbed_task_prompts(config.task, config.concept, classes)
        with tm("unlearn"):
            masks, cp_result = conceptprune(pipeline, target, base, cp_cfg, progress=progress)
            unlearned = {**original, **apply_masks(original, masks)}
            layers = sorted(masks)
        details["unlearn"] = cp_result.to_dict()
        _log(progress, f"  pruned {cp_result.pruned} of {cp_result.total} weights in {len(layers)} layers "
                       f"({100 * cp_result.pruned / cp_result.total:.2f}%)")
        evaluate("unlearned", unlearned)

        _log(progress, "[3/5] the revival attack on the unlearned model")
        with tm("attack"):
            updates, a_result = revive(unlearned, layers, attack_cfg, progress=progress)
            revived = {**unlearned, **updates}
        details["attack"] = a_result.to_dict()
        signs = _sign_recovery(original, unlearned, revived, layers)
        details["sign_recovery"] = signs
        _log(progress, f"  sign recovery: {signs['all']:.3f} of all pruned, {signs['kept']:.3f} of kept")
        evaluate("revived", revived)

        _log(progress, f"[4/5] Gaussian obfuscation of the unlearned model (stats={config.obfuscate_stats})")
        with tm("obfuscate"):
            o_updates, o_result = obfuscate(unlearned, layers, stats=config.obfuscate_stats, seed=config.seed)
            obfuscated = {**unlearned, **o_updates}
        details["obfuscate"] = o_result.to_dict() if hasattr(o_result, "to_dict") else str(o_result)
        evaluate("obfuscated", obfuscated)

        _log(progress, "[5/5] the revival attack on the obfuscated model")
        with tm("attack_obfuscated"):
            try:
                o2_updates, o2_result = revive(obfuscated, layers, attack_cfg, progress=progress)
                details["attack_obfuscated"] = o2_result.to_dict()
            except RevivalError as exc:  # no exact zeros left: the attacker finds nothing to revive
                o2_updates = {}
                details["attack_obfuscated"] = {"refused": str(exc)}
                _log(progress, f"  the attack finds nothing to revive: {exc}")
            obf_revived = {**obfuscated, **o2_updates}
        evaluate("obfuscated_revived", obf_revived)
    finally:
        unet.load_state_dict(original)

    tm.timings["total"] = time.perf_counter() - t_start
    report = {
        "concept": config.concept,
        "accuracy": {side: {s: acc[side][s] for s in STAGES} for side in ("erased", "preserved")},
        "sign_recovery": {"all": float(signs["all"]), "kept": float(signs["kept"])},
        "timings": {k: round(float(v), 3) for k, v in tm.timings.items()},
    }
    validate_report(report)
    details["per_class"] = per_class
    write_outputs(report, details, grid, out_dir, config.concept, preserved)
    table = markdown_table(report)
    if progress:
        print(table)
        print(f"wrote {out_dir}/report.json, report.md, grid.png, bars.png, details.json")
    return report


def write_outputs(report: dict, details: dict, grid: dict[str, torch.Tensor], out_dir: Path,
                  concept: str, preserved: str) -> None:
    """Write every output file into a temporary folder first, then move them into `out_dir`:
    a failure leaves no partial set behind."""
    import os
    import shutil
    import tempfile

    from .io import jsonable

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".demo-", suffix=".tmp"))
    try:
        n = grid[STAGES[0]].shape[0] // 2
        cols = [f"erased: {concept}"] * n + [f"preserved: {preserved}"] * n
        image_grid([(STAGE_LABELS[s], grid[s]) for s in STAGES], cols, tmp / "grid.png")
        bar_plot(report, tmp / "bars.png")
        write_json(jsonable(details), tmp / "details.json")
        write_markdown(markdown_table(report), tmp / "report.md")
        write_json(report, tmp / "report.json")
        for name in ("grid.png", "bars.png", "details.json", "report.md", "report.json"):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_CLASSIFIER = {}


def testbed_evaluator(pipeline, classes, concept, seeds_per_class, config):
    """Erased / preserved accuracy of the testbed classifier on "an image of a {class}" x
    seeds 0..n-1 per class (`revival.evaluate`, in memory). Returns (erased, preserved,
    per-class accuracy, {class: images})."""
    from .evaluate.classifiers import get_classifier
    from .evaluate.evaluate import evaluate_concept
    from .evaluate.prompts import default_prompts

    if "testbed" not in _CLASSIFIER:
        _CLASSIFIER["testbed"] = get_classifier("testbed")
    rows = default_prompts(list(classes), seeds_per_class)
    res = evaluate_concept(pipeline, rows, _CLASSIFIER["testbed"], concept,
                           steps=config.inference_steps, guidance=config.guidance)
    images = {c: res.images[[i for i, r in enumerate(rows) if r.cls == c]] for c in classes}
    per_class = {c: s.accuracy for c, s in res.per_class.items()}
    return res.erased_accuracy, res.preserved_accuracy or 0.0, per_class, images
