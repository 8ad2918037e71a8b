"""`revival demo`: the paper end to end on the embedded testbed, in-process.

    original --ConceptPrune--> unlearned --attack--> revived
                                  |
                                  +--defense (resample)--> obfuscated --every attacker--> obfuscated_revived

Each of the five models is evaluated (erased-concept accuracy and preserved accuracy of the
testbed classifier on generated images, with Wilson 95% intervals) on HELD-OUT prompts and
seeds (`revival.evaluate.prompts.default_prompts`: other synonyms and templates than
ConceptPrune's, seeds from 1000); the attack's signs on the unlearned model are scored against the original weights. With
`target_erasure` the skill ratio is the least that erases (`revival.unlearn.least_damage`,
probed on validation seeds from 2000). With `controls` the revived model is also evaluated with
the same kept positions and magnitudes but random, flipped and the original's signs, and with
the original's values. The defended model (`defense`: the project's default, resample; or
gaussian, the paper's obfuscation, or decoy) is attacked by every attacker of
`revival.attack.attackers` (the paper's zeros-reading attack, and the adaptive ones that know
the defense and the method; the replay attacker, which regenerates known-seed fills); its seed is
derived from --seed (`revival.runtime.seeding.research_defense_seed`) so the demo is reproducible, where a
publisher's `revival defend` draws it from the OS. The stage "obfuscated + attack" is the strongest (the
highest erased accuracy), each one's figures in details.json. Models are swapped by loading state dicts into the one UNet; nothing is
written but the report files:

    DIR/report.json  see `revival.story.demo_report` for the shape
    DIR/report.md    the table
    DIR/grid.png     rows: the five stages; columns: erased-concept and preserved-concept images
    DIR/bars.png     erased / preserved accuracy per stage
    DIR/details.json everything else (settings, per-layer results, per-class accuracy)
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from revival.story.controls import sign_controls, sign_recovery
from revival.errors import RevivalError
from revival.runtime.seeding import research_defense_seed
from revival.story.demo_holds import HOLD_LABELS, HOLD_STAGES
from revival.story.stages import make_obfuscated, make_obfuscated_revived, make_revived, make_unlearned
from revival.story.demo_report import STAGES, STAGE_LABELS, bar_plot, image_grid, markdown_table, validate_report, write_json, write_markdown
from revival.unlearn.least_damage import SEARCH_IMAGES, search_images


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo.

    concept: the testbed class erased. preserved_concept: the class shown beside it in the grid
    (None: the first other class). seeds_per_class: evaluation images per class (all 10
    classes). grid_seeds: images per concept in the grid. skill_ratio / unlearn_steps:
    ConceptPrune (see DEFAULT_* for the demo's defaults and why). keep / magnitude / solver:
    the attack (None: the attack's own defaults). defense: the defense of stage 4 (resample,
    gaussian, decoy); obfuscate_stats: its noise statistics, "row" | "layer".
    inference_steps / guidance: sampler settings (None: the testbed's defaults).
    classes: restrict evaluation to these classes (None: all; the test suite uses a few).
    modules: regex over UNet module names that ConceptPrune prunes (None: the paper's ff.net.2);
        the attack, the defense and the scoring then work on exactly the pruned layers.
    holds: stage 6, where the concept has a shipped never-learned model and robust release.
    """

    concept: str = "sneaker"
    preserved_concept: str | None = None
    seeds_per_class: int = 20
    grid_seeds: int = 4
    skill_ratio: float = 0.05  # used when target_erasure is None; the paper's 0.02 erases little here
    target_erasure: float | None = 0.2  # least-damage search: smallest ratio with erased <= this
    search_seeds: int = SEARCH_IMAGES  # validation images of the concept per probe of the search
    controls: bool = False
    utility: bool = True  # FID/KID of the preserved classes (testbed-CNN features)
    paper_recipe: bool = False  # also attack with the paper's recipe (svt completion) and evaluate it
    unlearn_steps: int = 10
    keep: float | None = None
    magnitude: str | None = None
    solver: str | None = None
    obfuscate_stats: str = "row"
    defense: str = "resample"  # revival.defense.DEFAULT_DEFENSE
    seed: int = 0
    inference_steps: int | None = None
    guidance: float | None = None
    classes: tuple[str, ...] | None = None
    modules: str | None = None
    task: str = "objects"  # objects | artists | nudity (revival.testbed.tasks)
    halves: str = "both"   # ConceptPrune's CFG halves (the style/attribute tasks: "cond")
    holds: bool = True     # stage 6: the never-learned model, the robust erasure, relearning (objects)

    def __post_init__(self) -> None:
        if not isinstance(self.seeds_per_class, int) or self.seeds_per_class < 1:
            raise RevivalError(f"--seeds-per-class must be a positive integer, got {self.seeds_per_class!r}.")
        search_images(self.search_seeds)
        if not isinstance(self.grid_seeds, int) or self.grid_seeds < 1:
            raise RevivalError(f"grid_seeds must be a positive integer, got {self.grid_seeds!r}.")
        if self.obfuscate_stats not in ("row", "layer"):
            raise RevivalError(f"obfuscate_stats must be 'row' or 'layer', got {self.obfuscate_stats!r}.")
        from revival.defense import DEFENSES

        if self.defense not in DEFENSES:
            raise RevivalError(f"--defense must be one of {', '.join(DEFENSES)}, got {self.defense!r}.")
        if self.target_erasure is not None and not (isinstance(self.target_erasure, (int, float))
                                                    and 0.0 <= self.target_erasure <= 1.0):
            raise RevivalError(f"--target-erasure must be an accuracy in [0, 1], got {self.target_erasure!r}.")

    @classmethod
    def make(cls, concept: str | None = "sneaker", quick: bool = False, task: str = "objects",
             **overrides) -> "DemoConfig":
        """The default demo, or with `quick` a smaller run (fewer evaluation images); `task`
        other than objects: the testbed's style or attribute task (revival.testbed.tasks)."""
        if task != "objects":
            from revival.testbed.tasks import task_demo_config
            return task_demo_config(cls, task, concept, quick, **overrides)
        base = cls(concept=concept or "sneaker")
        if quick:
            base = replace(base, seeds_per_class=8, grid_seeds=3, search_seeds=10)
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


def run_demo(config: DemoConfig = DemoConfig(), out_dir="out/demo", *, progress: bool = True,
             pipeline=None, evaluator: Callable | None = None) -> dict:
    """Run the demo; write the report files into `out_dir`; return the report dict.

    `pipeline` (default: the embedded testbed) and `evaluator` (default: the testbed
    classifier through `revival.evaluate` on held-out prompts) may be replaced, e.g. by the test
    suite. `evaluator(pipeline, classes, concept, seeds_per_class, config, first_seed)` ->
    (erased accuracy, preserved accuracy, per-class dict, {class: images [n, C, H, W]}).
    """
    from revival.attack.revive import AttackConfig
    from revival.intervals import Proportion
    from revival.release.layers import select_layers
    from revival.evaluate.prompts import HELDOUT_FIRST_SEED
    from revival.unlearn.conceptprune import ConceptPruneConfig, concept_statistics, testbed_task_prompts

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RevivalError(f"--out {out_dir} is a file, not a folder.")
    t_start = time.perf_counter()
    tm = _Timer()
    with tm("load"):
        if pipeline is None:
            from revival.testbed import load_pipeline

            from revival.testbed import testbed_unet_dir

            pipeline = load_pipeline(testbed_unet_dir(config.task))
        if config.task != "objects":
            from revival.testbed.tasks import task_demo_setup
            classes, preserved, evaluator = task_demo_setup(config, pipeline, evaluator)
        evaluator = evaluator or testbed_evaluator
    if config.task == "objects":
        classes = list(config.classes or pipeline.classes)
        unknown = [c for c in classes if c not in pipeline.classes]
        if unknown:
            raise RevivalError(f"Unknown class {unknown[0]!r}; the testbed knows: {', '.join(pipeline.classes)}.")
        if config.concept not in classes:
            raise RevivalError(f"Unknown concept {config.concept!r}; the testbed knows: {', '.join(classes)}.")
        preserved = config.preserved_concept or next(c for c in classes if c != config.concept)
        if preserved not in classes or preserved == config.concept:
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
    n_images = {"erased": 0, "preserved": 0}  # per stage, from the evaluator's images
    acc = {"erased": {}, "preserved": {}}
    ci = {"erased": {}, "preserved": {}}
    per_class, grid = {}, {}
    details: dict = {"config": asdict(config), "attack_config": asdict(attack_cfg),
                     "evaluation": {"prompts": "held-out (revival.evaluate.prompts.default_prompts)",
                                    "first_seed": HELDOUT_FIRST_SEED}}

    def measure(state: dict[str, torch.Tensor]):
        unet.load_state_dict(state)
        e, p, table, images = evaluator(pipeline, classes, config.concept, config.seeds_per_class, config,
                                        HELDOUT_FIRST_SEED)
        n_erased = len(images[config.concept])
        n_preserved = sum(len(v) for c, v in images.items() if c != config.concept)
        n_images.update(erased=n_erased, preserved=n_preserved)
        pe, pp = Proportion(round(e * n_erased), n_erased), Proportion(round(p * n_preserved), n_preserved)
        return float(e), float(p), pe.to_dict()["ci95"], pp.to_dict()["ci95"], table, images

    def rank(state: dict[str, torch.Tensor]):
        """What ranks the attackers of stage 5: the erased accuracy on the concept's images alone
        (objects: the same images as `measure`'s; preserved not measured), else `measure`."""
        if config.task != "objects":
            return measure(state)
        unet.load_state_dict(state)
        e, _, _, images = evaluator(pipeline, [config.concept], config.concept, config.seeds_per_class, config,
                                    HELDOUT_FIRST_SEED)
        return float(e), math.nan

    utility: dict = {}
    others = [c for c in classes if c != config.concept]
    reals = None

    def evaluate(stage: str, state: dict[str, torch.Tensor], measured=None) -> None:
        nonlocal reals
        with tm(f"evaluate_{stage}"):
            e, p, ce, cpv, table, images = measured or measure(state)
        if config.utility and config.task == "objects" and len(others) * config.seeds_per_class >= 4:
            from revival.evaluate.fid import classifier_features, feature_distance, real_test_images

            with tm(f"utility_{stage}"):
                if reals is None:
                    reals = (real_test_images(others, config.seeds_per_class, seed=config.seed), classifier_features())
                d = feature_distance(reals[0], torch.cat([images[c] for c in others]), reals[1],
                                     name="testbed-CNN penultimate (512-d)", seed=config.seed)
            utility[stage] = {"fid": round(d.fid, 4), "kid": round(d.kid, 6)}
        acc["erased"][stage], acc["preserved"][stage] = e, p
        ci["erased"][stage], ci["preserved"][stage] = ce, cpv
        per_class[stage] = table
        n = min(config.grid_seeds, len(images[config.concept]), len(images[preserved]))
        grid[stage] = torch.cat([images[config.concept][:n], images[preserved][:n]])
        _log(progress, f"  {STAGE_LABELS[stage]:<26} erased {e:.3f} [{ce[0]:.2f}, {ce[1]:.2f}]  "
                       f"preserved {p:.3f} [{cpv[0]:.2f}, {cpv[1]:.2f}]")

    unlearn_info = {"skill_ratio": float(config.skill_ratio), "target_erasure": config.target_erasure, "reached": None}
    holds, relearn = {}, {}
    controls: dict = {}
    paper: dict = {}
    try:
        _log(progress, f"[1/5] evaluating the original testbed model ({config.seeds_per_class} held-out images per class)")
        evaluate("original", original)

        target, base = testbed_task_prompts(config.task, config.concept, classes)
        with tm("unlearn"):
            stats = concept_statistics(pipeline, target, base, cp_cfg, progress=progress)
            if config.target_erasure is not None:
                from revival.unlearn.least_damage import SEARCH_FIRST_SEED, least_damage

                _log(progress, f"[2/5] ConceptPrune: the least skill ratio that erases '{config.concept}' to "
                               f"<= {config.target_erasure} (validation seeds from {SEARCH_FIRST_SEED})")

                if config.task == "objects":
                    def erased_fn(masks):
                        unet.load_state_dict(make_unlearned(original, masks))
                        return evaluator(pipeline, [config.concept], config.concept, config.search_seeds, config,
                                         SEARCH_FIRST_SEED)[0]
                else:  # the concept's rows only (every item carrying the style / attribute)
                    from revival.testbed.tasks import task_erased_fn

                    erased_fn = task_erased_fn(pipeline, classes, config.task, config.concept, config.search_seeds,
                                               SEARCH_FIRST_SEED, original=original,
                                               inference_steps=config.inference_steps, guidance=config.guidance)

                search = least_damage(stats, cp_cfg, erased_fn, config.target_erasure,
                                      progress=(lambda m: _log(progress, m)))
                cp_cfg = replace(cp_cfg, skill_ratio=search.skill_ratio)
                unlearn_info.update(skill_ratio=float(search.skill_ratio), reached=search.reached)
                details["least_damage"] = search.to_dict()
            else:
                _log(progress, f"[2/5] ConceptPrune: erasing '{config.concept}' "
                               f"(skill ratio {config.skill_ratio}, first {config.unlearn_steps} steps)")
            masks, cp_result = stats.masks(cp_cfg)
            unlearned = make_unlearned(original, masks)
            layers = sorted(masks)
        details["unlearn"] = cp_result.to_dict()
        _log(progress, f"  pruned {cp_result.pruned} of {cp_result.total} weights in {len(layers)} layers "
                       f"({100 * cp_result.pruned / cp_result.total:.2f}%, skill ratio {cp_cfg.skill_ratio:.4g})")
        evaluate("unlearned", unlearned)

        _log(progress, "[3/5] the revival attack on the unlearned model")
        with tm("attack"):
            revived, a_result = make_revived(unlearned, layers, attack_cfg, progress=progress)
        details["attack"] = a_result.to_dict()
        completed = make_revived(unlearned, layers, replace(attack_cfg, keep=1.0))[0]
        signs = sign_recovery(original, unlearned, revived, completed, layers)
        details["sign_recovery"] = signs
        _log(progress, f"  sign recovery: completion {signs['completion']:.3f} of all pruned (before Top-K), "
                       f"{signs['kept']:.3f} of kept")
        evaluate("revived", revived)
        if config.paper_recipe:
            with tm("attack_paper_recipe"):
                svt_cfg = replace(attack_cfg, solver="svt")
                svt_revived, svt_result = make_revived(unlearned, layers, svt_cfg)
                svt_completed = make_revived(unlearned, layers, replace(svt_cfg, keep=1.0))[0]
            svt_signs = sign_recovery(original, unlearned, svt_revived, svt_completed, layers)
            with tm("evaluate_paper_recipe"):
                e, p, ce, cpv, table, _ = measure(svt_revived)
            paper = {"erased": e, "preserved": p, "erased_ci95": ce, "preserved_ci95": cpv,
                     "sign_recovery": {k: svt_signs[k] for k in ("completion", "kept", "all")}}
            details["attack_paper_recipe"] = svt_result.to_dict()
            per_class["paper_recipe"] = table
            _log(progress, f"  paper's recipe (svt)      erased {e:.3f} [{ce[0]:.2f}, {ce[1]:.2f}]  preserved {p:.3f}  "
                           f"signs: completion {svt_signs['completion']:.3f}, kept {svt_signs['kept']:.3f}")
        if config.controls:
            _log(progress, "  controls: the same kept positions and magnitudes with other signs")
            for name, layer_updates in sign_controls(original, unlearned, revived, layers, config.seed).items():
                with tm(f"control_{name}"):
                    e, p, ce, cpv, table, _ = measure({**unlearned, **layer_updates})
                controls[name] = {"erased": e, "preserved": p, "erased_ci95": ce, "preserved_ci95": cpv}
                per_class[f"control_{name}"] = table
                _log(progress, f"  {name:<26} erased {e:.3f} [{ce[0]:.2f}, {ce[1]:.2f}]  preserved {p:.3f}")

        _log(progress, f"[4/5] defense: {config.defense} on the unlearned model (stats={config.obfuscate_stats})")
        with tm("obfuscate"):
            obfuscated, o_result = make_obfuscated(unlearned, layers, config.defense,
                                                   research_defense_seed(config.seed), stats=config.obfuscate_stats)
        details["obfuscate"] = o_result.to_dict()
        evaluate("obfuscated", obfuscated)

        _log(progress, "[5/5] every attacker against the defended model (the strongest is reported)")
        with tm("attack_obfuscated"):
            worst_state, worst_measured, attackers = make_obfuscated_revived(
                pipeline, obfuscated, original, (target, base), cp_cfg, attack_cfg, rank, progress)
        details["attack_obfuscated"] = attackers
        # the strongest measured on every class (ranked on the concept's images alone)
        evaluate("obfuscated_revived", worst_state, worst_measured if len(worst_measured or ()) == 6 else None)
        if config.holds and config.task == "objects":
            holds, relearn = _holds(pipeline, config, original, unlearned, measure, evaluator, grid, preserved, tm,
                                    progress)
    finally:
        unet.load_state_dict(original)

    tm.timings["total"] = time.perf_counter() - t_start
    report = {
        "concept": config.concept,
        "accuracy": {side: {s: acc[side][s] for s in STAGES} for side in ("erased", "preserved")},
        "intervals": {side: {s: ci[side][s] for s in STAGES} for side in ("erased", "preserved")},
        "images": dict(n_images),
        "sign_recovery": {k: float(signs[k]) for k in ("completion", "kept", "all")},
        "unlearn": unlearn_info,
        **({"controls": controls} if controls else {}),
        **({"utility": utility} if utility else {}),
        **({"paper_recipe": paper} if paper else {}),
        **({"holds": holds} if holds else {}),
        **({"relearn": relearn} if relearn else {}),
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
    """Write every output file into a temporary folder first, then move them into `out_dir`
    (`revival.io.atomic_folder`: other files there are left alone): a failure leaves no partial set."""
    from revival.io import atomic_folder, jsonable

    def write(tmp: Path) -> None:
        n = grid[STAGES[0]].shape[0] // 2
        cols = [f"erased: {concept}"] * n + [f"preserved: {preserved}"] * n
        labels = {**STAGE_LABELS, **HOLD_LABELS}
        image_grid([(labels[s], grid[s]) for s in (*STAGES, *HOLD_STAGES) if s in grid], cols, tmp / "grid.png")
        bar_plot(report, tmp / "bars.png")
        write_json(jsonable(details), tmp / "details.json")
        write_markdown(markdown_table(report), tmp / "report.md")
        write_json(report, tmp / "report.json")

    atomic_folder(out_dir, write)


_CLASSIFIER = {}


def _holds(pipeline, config, original, unlearned, measure, evaluator, grid, preserved, tm, progress):
    """Stage 6: the never-learned model and the robust erasure beside the pruned release, each
    relearned with the same images and steps (`revival.story.demo_holds`). Returns (holds, relearn)."""
    from revival.story.demo_holds import grid_rows, holds_act
    from revival.evaluate.prompts import HELDOUT_FIRST_SEED
    from revival.intervals import Proportion

    def erased_only(state):
        with tm("evaluate_relearned"):
            unet = pipeline.unet
            unet.load_state_dict(state)
            e, _, _, images = evaluator(pipeline, [config.concept], config.concept, config.seeds_per_class, config,
                                        HELDOUT_FIRST_SEED)
        n = len(images[config.concept])
        return float(e), Proportion(round(e * n), n).to_dict()["ci95"]

    _log(progress, "[6/6] beside a model that never learned the concept: the robust erasure, and relearning")
    with tm("holds"):
        measured, relearn = holds_act(pipeline, config.concept, original, unlearned, measure, erased_only,
                                      lambda m: _log(progress, m))
    holds = {}
    for stage, (e, p, ce, cpv, _, _) in measured.items():
        holds[stage] = {"erased": e, "preserved": p, "erased_ci95": ce, "preserved_ci95": cpv}
        _log(progress, f"  {HOLD_LABELS[stage]:<26} erased {e:.3f} [{ce[0]:.2f}, {ce[1]:.2f}]  "
                       f"preserved {p:.3f} [{cpv[0]:.2f}, {cpv[1]:.2f}]")
    n = min(config.grid_seeds, *(len(m[5][config.concept]) for m in measured.values())) if measured else 0
    grid.update(grid_rows(measured, config.concept, preserved, n))
    return holds, relearn


def testbed_evaluator(pipeline, classes, concept, seeds_per_class, config, first_seed=None):
    """Erased / preserved accuracy of the testbed classifier on held-out prompts
    (`revival.evaluate.prompts.default_prompts`), seeds first_seed.. per class, in memory.
    Returns (erased, preserved, per-class accuracy, {class: images})."""
    from revival.evaluate.classifiers import get_classifier
    from revival.evaluate.evaluate import evaluate_concept
    from revival.evaluate.prompts import HELDOUT_FIRST_SEED, default_prompts

    if "testbed" not in _CLASSIFIER:
        _CLASSIFIER["testbed"] = get_classifier("testbed")
    rows = default_prompts(list(classes), seeds_per_class, HELDOUT_FIRST_SEED if first_seed is None else first_seed)
    res = evaluate_concept(pipeline, rows, _CLASSIFIER["testbed"], concept,
                           steps=config.inference_steps, guidance=config.guidance)
    images = {c: res.images[[i for i, r in enumerate(rows) if r.cls == c]] for c in classes}
    per_class = {c: s.accuracy for c, s in res.per_class.items()}
    return res.erased_accuracy, res.preserved_accuracy or 0.0, per_class, images
