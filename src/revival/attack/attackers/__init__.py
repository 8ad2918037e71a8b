"""The attackers: named recipes that find the pruned positions of a release and revive them.

A publisher asks "can my release be revived from the release alone?". Each attacker answers
with one way of finding the hidden positions (one file an idea), followed by the same revival
(matrix completion -> Top-K sign retention -> magnitude rule, `revive.py`):

    zeros         the paper's: the pruned positions are the exact zeros (`revive.py`)
    replay        this project's own fill recipes as they were (the old public default seed and
                  small seeds): regenerates the noise streams and finds the positions they filled
                  (`replay.py`)
    residual      entries that fit the matrix's structure worst (`locate.py`)
    method-aware  reruns ConceptPrune's activation statistics on the release for the concept's
                  public prompts and reruns its selection (`method_aware.py`)
    columns       hidden units whose output column fits its side information worst, revived
                  whole from side information and the rest of the matrix (`columns.py`)
    reprune       zeroes the smallest weights (globally or per row), then reads the zeros (`reprune.py`)

An attacker is a function ``locate(tensors, layers, context) -> Located``; `run_attacker` then
zeroes the located entries, revives them and puts the release's value back wherever the attack
kept no sign. With the original weights (`truth`), `localisation` scores how well the pruned
positions were found: AUC of the attacker's suspicion score per entry and per column, and
precision at k (k = the true number).

Example::

    >>> updates, result = run_attacker("residual", release, layers, AttackContext())
    >>> result.to_dict()["located"]
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from revival.errors import RevivalError
from revival.attack.magnitudes import get_magnitude
from revival.runtime.seeding import item_seed
from revival.attack.config import AttackConfig
from revival.attack.attackers.base import LOCATORS, AttackContext, Located, top_fraction  # noqa: F401 (attackers' public names)
from revival.attack.partners import revive_layer
from revival.attack.signs import top_k_signs
from revival.attack.attackers.truth import true_mask

DEFAULT_ATTACKER = "zeros"


@dataclass
class Localisation:
    """How well an attacker found the true positions (higher AUC = better for the attacker).

    entry_auc: AUC of the entry score for the true positions; column_auc: AUC of the column
    score for the columns where pruning concentrated (the fewest columns holding half the
    pruned entries); column_auc_any: for columns holding any; precision_at_k: true share of
    the k top-scored entries (k = true count); precision / recall: of the located set;
    base_rate: the true share (precision of a random guess)."""

    entry_auc: float
    column_auc: float
    column_auc_any: float
    precision_at_k: float
    precision: float
    recall: float
    base_rate: float
    true: int
    located: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class AttackerResult:
    attacker: str
    located: int
    revived: int
    layers: int
    seconds: float
    localisation: Localisation | None = None
    per_layer: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    refused: str | None = None     # why the attacker found nothing to revive

    def to_dict(self) -> dict:
        d = {"attacker": self.attacker, "located": self.located, "revived": self.revived,
             "layers": self.layers, "seconds": round(self.seconds, 3), "refused": self.refused,
             "localisation": self.localisation.to_dict() if self.localisation else None,
             "per_layer": self.per_layer, "info": self.info}
        return d


# --------------------------------------------------------------------------- quality

def auc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann-Whitney AUC of `score` for the True entries of `labels` (ties get average rank);
    nan when either class is empty."""
    s, m = score.flatten().double(), labels.flatten().bool()
    pos = int(m.sum())
    neg = m.numel() - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=s.dtype)
    # average ranks of ties
    uniq, inv, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    if uniq.numel() < s.numel():
        ends = counts.cumsum(0).double()
        avg = ends - (counts.double() - 1) / 2
        ranks[order] = avg[inv]
    return float((ranks[m].sum() - pos * (pos + 1) / 2) / (pos * neg))


def concentrated_columns(mask: torch.Tensor) -> torch.Tensor:
    """The fewest columns that together hold at least half of the mask's entries (bool [in])."""
    cnt = mask.sum(0)
    if int(cnt.sum()) == 0:
        return torch.zeros_like(cnt, dtype=torch.bool)
    vals, order = cnt.sort(descending=True, stable=True)
    need = int((vals.cumsum(0) < 0.5 * float(cnt.sum())).sum()) + 1
    out = torch.zeros_like(cnt, dtype=torch.bool)
    out[order[:need]] = True
    return out


def column_score(score: torch.Tensor) -> torch.Tensor:
    """Default column score: the mean entry score of each column."""
    return score.float().mean(0)


def localisation(located: Located, truth: Mapping[str, torch.Tensor], layers: Sequence[str]) -> Localisation:
    """Entry and column AUC, precision@k, precision / recall of `located` against `truth`
    (bool masks of the true positions). Scores of different layers are pooled per layer-rank
    (each layer's scores are turned into within-layer quantiles first)."""
    e_s, e_t, c_s, c_t, c_a, hits_k, loc_n, loc_hit, n_true, n_all = [], [], [], [], [], 0, 0, 0, 0, 0
    for name in layers:
        if name not in truth:
            continue
        t = truth[name].bool().cpu()
        s = located.scores[name].float().cpu()
        if tuple(s.shape) != tuple(t.shape):
            raise RevivalError(f"the true mask of {name} has shape {tuple(t.shape)}, the layer {tuple(s.shape)}.")
        q = _quantiles(s)
        e_s.append(q.flatten())
        e_t.append(t.flatten())
        cs = located.column_scores[name].float().cpu() if located.column_scores and name in located.column_scores \
            else column_score(s)
        c_s.append(_quantiles(cs))
        c_t.append(concentrated_columns(t))
        c_a.append(t.any(0))
        k = int(t.sum())
        n_true += k
        n_all += t.numel()
        if k:
            top = torch.argsort(s.flatten(), descending=True, stable=True)[:k]
            hits_k += int(t.flatten()[top].sum())
        m = located.masks[name].bool().cpu()
        loc_n += int(m.sum())
        loc_hit += int((m & t).sum())
    if not e_s:
        raise RevivalError("no target layer has a true mask to score the localisation against.")
    return Localisation(
        entry_auc=auc(torch.cat(e_s), torch.cat(e_t)), column_auc=auc(torch.cat(c_s), torch.cat(c_t)),
        column_auc_any=auc(torch.cat(c_s), torch.cat(c_a)),
        precision_at_k=hits_k / n_true if n_true else float("nan"),
        precision=loc_hit / loc_n if loc_n else 0.0, recall=loc_hit / n_true if n_true else float("nan"),
        base_rate=n_true / n_all if n_all else float("nan"), true=n_true, located=loc_n)


def _quantiles(s: torch.Tensor) -> torch.Tensor:
    """Within-layer quantiles in [0, 1]; tied scores share their average rank."""
    flat = s.flatten().double()
    order = torch.argsort(flat, stable=True)
    _, inv, counts = torch.unique_consecutive(flat[order], return_inverse=True, return_counts=True)
    avg = counts.cumsum(0).double() - (counts.double() + 1) / 2       # 0-based average rank
    ranks = torch.empty_like(flat)
    ranks[order] = avg[inv]
    return (ranks / max(1, flat.numel() - 1)).view(s.shape)


# --------------------------------------------------------------------------- revival

def revive_located(tensors: Mapping[str, torch.Tensor], layers: Sequence[str], located: Located,
                   config: AttackConfig) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Zero the located entries and revive them through the attack `revival attack` runs
    (`partners.revive_layer`: the partner matrix as side information both ways, whole missing
    rows, on `config.device` -- CUDA when available), or from the attacker's own estimates when
    it made some; put the release's value back wherever no sign was kept. Returns (updates in
    the release's dtype and device, per-layer {located, revived, side})."""
    device = _device(config)
    updates, per_layer = {}, {}
    for name in layers:
        mask = located.masks.get(name)
        if mask is None or not bool(mask.any()):
            continue
        w = tensors[name]
        m = mask.to(device=w.device, dtype=torch.bool)
        zeroed = w.masked_fill(m, 0)
        if located.estimates is not None and name in located.estimates:
            out = _revive_estimate(zeroed, m, located.estimates[name], config, name, device)
            side = None
        else:
            view = {**tensors, name: zeroed}
            out, _, _, _, info = revive_layer(view, name, config, device)
            out = out.to(w.device)
            side = bool(info.get("side", False))
        # the attack keeps signs at some positions; the rest of the located entries keep the release's value
        updates[name] = torch.where(m & (out == 0), w, out)
        per_layer[name] = {"located": int(mask.sum()), "revived": int((updates[name] != w).sum()), "side": side}
    return updates, per_layer


def _device(config: AttackConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _revive_estimate(zeroed: torch.Tensor, missing: torch.Tensor, estimate: torch.Tensor,
                     config: AttackConfig, name: str, device: torch.device) -> torch.Tensor:
    """Top-K signs and magnitudes from an attacker's own estimate (on `device`); returns the
    matrix on `zeroed`'s device and dtype."""
    zd, md, est = zeroed.to(device), missing.to(device), estimate.to(device)
    kept, signs = top_k_signs(est, md, config.keep)
    rows, cols = kept.nonzero(as_tuple=True)
    gen = torch.Generator(device="cpu").manual_seed(item_seed(config.seed, name))
    values = get_magnitude(config.magnitude)(zd, ~md, rows, cols, signs[rows, cols].double(),
                                             est[rows, cols].double(), gen)
    out = zeroed.clone()
    out[rows.to(out.device), cols.to(out.device)] = values.to(device=out.device, dtype=zeroed.dtype)
    return out


# --------------------------------------------------------------------------- the ladder's members

# imported for their registration, in the ladder's order (cheapest first): an attacker is one file
from revival.attack.attackers import zeros, replay, residual, method_aware, columns, reprune  # noqa: E402,F401

ATTACKERS = LOCATORS.names()


def check_attacker(name: str) -> str:
    if name not in ATTACKERS:
        raise RevivalError(f"attacker must be one of {', '.join(ATTACKERS)}, got {name!r}.")
    return name


def run_attacker(name: str, tensors: Mapping[str, torch.Tensor], layers: Sequence[str],
                 context: AttackContext | None = None, *,
                 truth: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], AttackerResult]:
    """Locate with attacker `name`, revive what it located. Returns (updates, AttackerResult);
    updates hold only changed layers (release dtype/shape; entries outside the located set are
    bit-identical). With `truth` (true masks), the result carries the localisation quality.
    An attacker that locates nothing returns no updates and says why in `refused`."""
    check_attacker(name)
    context = context or AttackContext()
    layers = list(layers)
    from revival.release.layers import check_matrices

    check_matrices(tensors, layers, "the attacker")
    t0 = time.perf_counter()
    located = LOCATORS.get(name)(tensors, layers, context)
    n_loc = sum(int(m.sum()) for m in located.masks.values())
    result = AttackerResult(attacker=name, located=n_loc, revived=0, layers=0, seconds=0.0, info=dict(located.info))
    if truth is not None:
        result.localisation = localisation(located, truth, layers)
    if n_loc == 0:
        result.refused = "it located no position to revive"
        result.seconds = time.perf_counter() - t0
        return {}, result
    updates, per_layer = revive_located(tensors, layers, located, context.config)
    result.per_layer = per_layer
    result.revived = sum(v["revived"] for v in per_layer.values())
    result.layers = len(per_layer)
    result.seconds = time.perf_counter() - t0
    return updates, result


# --------------------------------------------------------------------------- checkpoints

def attack_release(path, output, attacker: str, config: AttackConfig | None = None, *, layers: str | None = None,
                   report=None, model: str | None = None, concept: str | None = None,
                   fraction: float | None = None, original=None, overwrite: bool = False,
                   progress: bool = False) -> dict:
    """Load a release, run `attacker`, write the revived checkpoint (input's format) and a JSON
    report (OUT.report.json beside it, file or folder; `report` to choose).
    method-aware also needs `model` ("testbed" or a local SD pipeline folder) and `concept`.
    With `original` (the checkpoint before unlearning) the report scores the localisation.
    Returns the report dict. Bad input raises RevivalError before anything is written; an
    existing output or report is refused unless `overwrite`."""
    from revival.io import check_output_path, load_checkpoint, plan_outputs, save_checkpoint, write_report
    from revival.release.layers import check_finite

    check_attacker(attacker)
    t0 = time.perf_counter()
    ckpt = load_checkpoint(path)
    output, report_path = plan_outputs(ckpt, output, report, overwrite=overwrite)
    names = attack_layers(ckpt.tensors, layers)
    check_finite(ckpt.tensors, names, str(ckpt.path))
    config = config or AttackConfig()
    ctx_kw: dict = {"config": config, "fraction": fraction}
    tensors = with_partners(ckpt.tensors, names)
    if attacker == "method-aware":
        if not concept:
            raise RevivalError("the method-aware attacker needs --concept (and --model, default testbed).")
        ctx_kw.update(_method_context(model or "testbed", concept, ckpt, names))
    truth = None
    if original is not None:
        orig = load_checkpoint(original)
        check_output_path(output, orig.input_paths())
        missing = [n for n in names if n not in orig.tensors]
        if missing:
            raise RevivalError(f"the original has no layer {missing[0]!r}.")
        truth = true_mask({n: orig.tensors[n] for n in names}, tensors, names)
    updates, result = run_attacker(attacker, tensors, names, AttackContext(**ctx_kw), truth=truth)
    if not updates:
        raise RevivalError(f"the {attacker} attacker found nothing to revive in {ckpt.path} ({result.refused}).")
    written = save_checkpoint(ckpt, output, updates, overwrite=overwrite)
    data = {"input": str(ckpt.path), "output": str(written), "format": ckpt.format, "naming": ckpt.naming,
            "layer_pattern": layers or "found pruned (exact zeros), else every ff.net.2", "layers": names, "attacker": result.to_dict(),
            "attack": {"config": asdict(config)}, "seconds": {"total": round(time.perf_counter() - t0, 4)}}
    data["report"] = str(write_report(report_path, data, ckpt.input_paths()))
    return data


def attack_layers(tensors: Mapping[str, torch.Tensor], pattern: str | None = None) -> list[str]:
    """The layers an attacker works on: those matching `pattern`, else every layer found pruned by
    its exact zeros (`revival.release.layers.detect_pruned_layers`, as `inspect`, `attack` and `defend`),
    else (a release whose zeros are hidden) every transformer block's ff.net.2."""
    from revival.release.layers import DEFAULT_LAYERS, detect_pruned_layers, select_layers

    if pattern is not None:
        return select_layers(tensors, pattern)
    found = [p.name for p in detect_pruned_layers(tensors)]
    return found or select_layers(tensors, DEFAULT_LAYERS)


def with_partners(tensors: Mapping[str, torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The target layers and each one's partner matrix (side information both ways), when present."""
    from revival.attack.partners import find_partner

    out = {n: tensors[n] for n in layers}
    for n in layers:
        partner = find_partner(n, tensors)
        if partner is not None:
            out[partner.name] = tensors[partner.name]
    return out


def _method_context(model: str, concept: str, ckpt, layers: Sequence[str]) -> dict:
    """prompts and activation statistics of the release, for the method-aware attacker."""
    from revival.attack.attackers.activations import release_activations
    from revival.model.loader import load_model
    from revival.unlearn.conceptprune import PRESETS, concept_prompts, task_prompts

    pipe = load_model(model)
    own = pipe.unet.state_dict()
    state = {k: ckpt.tensors[k].to(own[k].dtype) for k in ckpt.tensors if k in own}
    if model == "testbed":
        if concept not in pipe.classes:
            raise RevivalError(f"unknown concept {concept!r}; the testbed knows: {', '.join(pipe.classes)}.")
        prompts, ratio, steps = concept_prompts(concept, pipe.classes), 0.05, 10
    else:
        prompts, (ratio, steps) = task_prompts("objects", concept), PRESETS["objects"]
    return {"prompts": prompts, "skill_ratio": ratio, "steps": steps,
            "activations": release_activations(pipe, state, steps, layers=layers)}
