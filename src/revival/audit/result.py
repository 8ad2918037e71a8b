"""What an audit found: each model's accuracy and the evidence behind a verdict, as JSON,
Markdown and a one-screen summary (`revival.audit.verdict.decide` turns the evidence into the verdict)."""
from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from revival.attack.attackers import ATTACKERS
from revival.intervals import Proportion
from revival.audit.verdict import combine, decide, decide_relearning


@dataclass
class Accuracy:
    """Erased and preserved accuracy of one model, with hit counts (for Wilson intervals) and the
    per-image outcome of the concept's images (for the paired interval of a gain)."""

    erased: Proportion
    preserved: Proportion
    erased_outcomes: tuple[bool, ...] = ()
    valid_share: float | None = None

    def to_dict(self) -> dict:
        return {"erased": self.erased.value, "preserved": self.preserved.value,
                "erased_ci95": self.erased.to_dict()["ci95"], "preserved_ci95": self.preserved.to_dict()["ci95"],
                "erased_hits": [self.erased.hits, self.erased.n], "preserved_hits": [self.preserved.hits, self.preserved.n],
                "valid_share": self.valid_share}


@dataclass
class AuditResult:
    """The evidence an audit gathered and the verdict it supports (`revival.audit.verdict.decide`)."""

    concept: str
    limit: float
    release: dict
    attacks: dict[str, dict] = field(default_factory=dict)
    original: dict | None = None
    ladder: tuple[str, ...] = ATTACKERS
    layers: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)   # changed tensors no attacker revives
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    never_learned: dict | None = None   # the never-learned model's accuracy and the release's excess over it
    relearn: dict | None = None         # the relearning curve, each budget beside the never-learned model's
    threat: str = "weights"             # which verdict the exit status follows: weights | relearn | both

    @property
    def weights_decision(self) -> tuple[str, list[str]]:
        return decide(self.attacks, self.ladder, self.limit, self.original, self.release, self.uncovered,
                      self.never_learned)

    @property
    def relearn_decision(self) -> tuple[str, list[str]] | None:
        if self.relearn is None and self.threat == "weights":
            return None
        return decide_relearning(self.relearn, self.limit, self.never_learned, self.original)

    @property
    def decision(self) -> tuple[str, list[str]]:
        w = self.weights_decision
        return w if self.threat == "weights" else combine(w, self.relearn_decision, self.threat)

    @property
    def verdict(self) -> str:
        return self.decision[0]

    @property
    def reasons(self) -> list[str]:
        return self.decision[1]

    @property
    def largest_gain(self) -> dict:
        """The attacker that gained most (of those that ran), its gain and interval."""
        key = "excess" if self.never_learned is not None else "gain"
        ran = [(n, a) for n, a in self.attacks.items() if a.get("status") == "ran" and a.get(key) is not None]
        if not ran:
            return {"attacker": None, "gain": None, "gain_ci95": None, "calibrated": key == "excess"}
        n, a = max(ran, key=lambda kv: kv[1][key])
        return {"attacker": n, "gain": a[key], "gain_ci95": a.get(f"{key}_ci95"), "calibrated": key == "excess"}

    def to_dict(self) -> dict:
        from revival import __version__

        verdict, reasons = self.decision
        return {"concept": self.concept, "verdict": verdict, "reasons": reasons, "limit": self.limit,
                "largest_gain": self.largest_gain, "release": self.release, "original": self.original,
                "attacks": self.attacks, "ladder": list(self.ladder), "layers": list(self.layers),
                "uncovered": list(self.uncovered), "threat": self.threat,
                "weights_verdict": dict(zip(("verdict", "reasons"), self.weights_decision)),
                "relearn_verdict": None if self.relearn_decision is None
                else dict(zip(("verdict", "reasons"), self.relearn_decision)),
                "never_learned": self.never_learned, "relearn": self.relearn,
                "settings": self.settings, "seconds": round(self.seconds, 2), "revival_version": __version__,
                "date": datetime.date.today().isoformat()}

    def markdown(self) -> str:
        r, (verdict, reasons) = self.release, self.decision
        o = self.original or {}
        lines = [f"# Audit: can the release be revived? concept {self.concept!r}", "",
                 f"**verdict: {verdict.upper()}** (limit: an attacker may gain at most {self.limit:.2f} erased accuracy)",
                 "", *[f"- {x}" for x in reasons], "",
                 f"original (before unlearning): erased {_pc(o.get('erased'), o.get('erased_ci95'))} "
                 f"(floor {o.get('floor', float('nan')):.2f})" if o else "original: not evaluated",
                 f"release: exposed {'yes' if r.get('exposed') else 'no'}; erased {_pc(r.get('erased'), r.get('erased_ci95'))}, "
                 f"preserved {_pc(r.get('preserved'), r.get('preserved_ci95'))}; layers audited: {len(self.layers)}",
                 "", "| attacker | status | erased | preserved | gain [95%] | located | entry AUC | column AUC | sign acc. |",
                 "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for name, a in self.attacks.items():
            loc, sg = a.get("localisation") or {}, a.get("signs") or {}
            lines.append(f"| {name} | {a.get('status')} | {_pc(a.get('erased'), a.get('erased_ci95'))} "
                         f"| {_pc(a.get('preserved'), a.get('preserved_ci95'))} | {_gain(a)} | {a.get('located', 0)} "
                         f"| {_f(loc.get('entry_auc'))} | {_f(loc.get('column_auc'))} | {_f(sg.get('kept'))} |")
        lines += self._calibration_lines()
        notes = [f"- {n}: {a['reason']}" for n, a in self.attacks.items() if a.get("reason")]
        if notes:
            lines += ["", "Notes:", *notes]
        lines += ["", "gain = erased accuracy of the attacked model - erased accuracy of the release, with its "
                  "interval for paired images (Newcombe; widened over the looks at the evidence); other intervals are "
                  "95% Wilson intervals. Evaluation prompts and seeds differ from the ones unlearning used."]
        return "\n".join(lines) + "\n"

    def _calibration_lines(self) -> list[str]:
        """Markdown: each attack beside the same attack on the never-learned model, and the
        relearning curve; nothing when neither was measured."""
        out = []
        nl = self.never_learned
        if nl is not None:
            out += ["", f"never-learned model ({nl.get('path')}): erased {_pc(nl.get('erased'), nl.get('erased_ci95'))}, "
                    f"preserved {_pc(nl.get('preserved'), nl.get('preserved_ci95'))}; the release erases to "
                    f"{_pc(self.release.get('erased'), self.release.get('erased_ci95'))}, "
                    f"{_gain(nl, 'excess')} beyond it", "",
                    "| attacker | on the release | on the never-learned model | excess [95%] |", "|---|---:|---:|---:|"]
            for name, a in self.attacks.items():
                out.append(f"| {name} | {_f(a.get('erased'), '.2f')} | {_f(a.get('never_learned_erased'), '.2f')} "
                           f"| {_gain(a, 'excess')} |")
        rl = self.relearn
        if rl is not None:
            v = self.relearn_decision
            draws = rl.get("draws") or 1
            out += ["", f"relearning (fine-tuning on real images of the concept, {rl.get('images_from')}; each budget "
                    f"{draws} draw{'s' if draws > 1 else ''} of its own images and seed, pooled): "
                    f"**{v[0].upper()}**", "", "| images | steps | release | never-learned | excess [95%] | release per draw |",
                    "|---:|---:|---:|---:|---:|---|"]
            for b in rl.get("budgets", []):
                per = " / ".join(_f(x, ".2f") for x in b.get("release_draws") or [b.get("release")])
                out.append(f"| {b.get('images')} | {b.get('steps')} | {_f(b.get('release'), '.2f')} "
                           f"| {_f(b.get('never_learned_erased'), '.2f')} | {_gain(b, 'excess')} | {per} |")
        return out

    def summary(self) -> str:
        """One screen: the evidence, one line per attacker, the verdict and its reasons."""
        r, o = self.release, self.original or {}
        out = [f"audit of concept {self.concept!r}: original erased {_f(o.get('erased'), '.2f')}; release erased "
               f"{_f(r.get('erased'), '.2f')}, preserved {_f(r.get('preserved'), '.2f')}, exposed "
               f"{'yes' if r.get('exposed') else 'no'}; {len(self.layers)} layer(s)"]
        nl = self.never_learned
        if nl is not None:
            out.append(f"  never-learned model erased {_f(nl.get('erased'), '.2f')}, preserved "
                       f"{_f(nl.get('preserved'), '.2f')}; the release {_gain(nl, 'excess')} beyond it")
        for name, a in self.attacks.items():
            flag = "" if a.get("status") == "ran" else f"  ({a.get('status')}: {a.get('reason')})"
            cal = f"  never-learned {_f(a.get('never_learned_erased'), '.2f')}  excess {_gain(a, 'excess')}" if nl else ""
            out.append(f"  {name:13s} erased {_f(a.get('erased'), '.2f')}  preserved {_f(a.get('preserved'), '.2f')}  "
                       f"gain {_gain(a)}{cal}{flag}")
        for b in (self.relearn or {}).get("budgets", []):
            out.append(f"  relearn K={b.get('images')} {b.get('steps')} steps: release {_f(b.get('release'), '.2f')}  "
                       f"never-learned {_f(b.get('never_learned_erased'), '.2f')}  excess {_gain(b, 'excess')}")
        if self.relearn_decision is not None and self.threat == "weights":
            out.append(f"relearning verdict (reported; the exit status follows --threat {self.threat}): "
                       f"{self.relearn_decision[0].upper()}")
        out.append(self.verdict_line())
        return "\n".join(out)

    def verdict_line(self) -> str:
        verdict, reasons = self.decision
        lg = self.largest_gain
        head = f"verdict: {verdict.upper()} (limit {self.limit:.2f}"
        head += f"; largest gain {lg['gain']:+.2f} by {lg['attacker']})" if lg["attacker"] else ")"
        return head + ("" if verdict == "pass" else ": " + "; ".join(reasons))


def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _gain(a: dict, key: str = "gain") -> str:
    ci = a.get(f"{key}_ci95")
    return _f(a.get(key), "+.2f") + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _pc(x, ci) -> str:
    return "n/a" if x is None else (f"{x:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))


EVAL_BATCH = 100   # images a generation batch (an image's bytes can depend on its batch's size)


def evaluate_state(pipeline, state: Mapping[str, torch.Tensor], rows, classifier, concept: str,
                   config) -> tuple:
    """The evaluation (`revival.evaluate.evaluate_concept`, with `config`'s sampler settings) of
    `state` loaded into the pipeline, in memory, and each concept image's outcome (hit or miss,
    row order). Memoised per process by content (`revival.evaluate.memo`)."""
    from revival.attack.attackers.activations import loaded_state
    from revival.evaluate.evaluate import concept_outcomes, evaluate_concept
    from revival.evaluate.memo import EVAL_MEMO

    def compute():
        with loaded_state(pipeline.unet, state):
            res = evaluate_concept(pipeline, rows, classifier, concept, steps=config.inference_steps,
                                   guidance=config.guidance, batch_size=EVAL_BATCH)
        return res, tuple(concept_outcomes(rows, res.predictions, concept, classifier.is_hit))

    key = EVAL_MEMO.key(pipeline, state, rows, classifier, concept,
                        {"steps": config.inference_steps, "guidance": config.guidance, "batch": EVAL_BATCH})
    res, outcomes = EVAL_MEMO.get_or_compute(
        key, compute, lambda v: 0 if v[0].images is None else v[0].images.numel() * v[0].images.element_size())
    return res, list(outcomes)


class Evaluations:
    """Each distinct UNet state evaluated once (`evaluate_state`, itself memoised per process): two
    attackers that return the same weights (say two locators that find the same positions) share
    one `Evidence`, and a later look draws its images once. States are told apart by content
    (`revival.runtime.digest.state_digest`: sha256 over each tensor's dtype, shape and bytes, a
    tensor object hashed once). `keep`: hold each state for later looks (`more`); off, only digests
    are kept. `evidence(state, erased_only=True)` judges the concept's images alone: for a state
    whose preserved accuracy no figure reads (an attack on the never-learned model, read only by
    its excess on the concept); its other rows' images are NaN (a blank grid tile)."""

    def __init__(self, pipeline, rows, classifier, concept: str, config, keep: bool = True):
        self._args = (pipeline, classifier, concept, config)
        self.rows, self.keep = rows, keep
        self._evidence: dict[str, Evidence] = {}
        self._states: dict[str, Mapping[str, torch.Tensor]] = {}

    def digest(self, state: Mapping[str, torch.Tensor]) -> str:
        from revival.runtime.digest import state_digest

        return state_digest(state.items())

    def evidence(self, state: Mapping[str, torch.Tensor], erased_only: bool = False) -> Evidence:
        full = self.digest(state)
        key = f"{full}:erased" if erased_only and full not in self._evidence else full
        if key not in self._evidence:
            pipeline, classifier, concept, config = self._args
            if key == full:
                self._evidence[key] = Evidence(*evaluate_state(pipeline, state, self.rows, classifier, concept, config))
            else:
                from revival.evaluate.evaluate import concept_rows

                idx = concept_rows(self.rows, concept)
                res, outcomes = evaluate_state(pipeline, state, [self.rows[i] for i in idx], classifier, concept, config)
                self._evidence[key] = Evidence(res, outcomes, spread=(idx, len(self.rows)))
            if self.keep:
                self._states[key] = state
        return self._evidence[key]

    def more(self, extra) -> None:
        """Every kept state's evidence grown by the rows `extra` (each distinct state once)."""
        pipeline, classifier, concept, config = self._args
        for key, state in self._states.items():
            self._evidence[key].add(*evaluate_state(pipeline, state, extra, classifier, concept, config))


class Evidence:
    """One model's judged images, grown look by look: the concept's outcomes, the other classes'
    hits (first look), the share of images the judge found valid."""

    def __init__(self, res, outcomes, spread: tuple[list[int], int] | None = None):
        self.outcomes = list(outcomes)
        self.preserved = res.preserved
        self.valid = [getattr(res, "valid_share", None)]
        self.images = res.images
        if spread is not None and res.images is not None:   # judged on rows `idx` of `n`: the others blank
            idx, n = spread
            self.images = torch.full((n, *res.images.shape[1:]), float("nan"), dtype=res.images.dtype)
            self.images[idx] = res.images

    def add(self, res, outcomes) -> None:
        self.outcomes += outcomes
        self.valid.append(getattr(res, "valid_share", None))

    def accuracy(self) -> Accuracy:
        v = [x for x in self.valid if x is not None]
        return Accuracy(Proportion(sum(self.outcomes), len(self.outcomes)), self.preserved, tuple(self.outcomes),
                        round(sum(v) / len(v), 4) if v else None)


class PooledEvidence:
    """The evidence of several relearning draws of one budget, read as one: the concept's outcomes
    of draw 0, then draw 1, ... (so the draws of the release pair with the same draws of the
    never-learned model, image for image), the other classes' hits summed. Each draw's Evidence
    grows look by look on its own; the pool reads them as they stand."""

    def __init__(self, parts):
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("a pool of evidence needs at least one draw")

    @property
    def images(self):
        return self.parts[0].images

    def accuracy(self) -> Accuracy:
        outcomes = [o for p in self.parts for o in p.outcomes]
        kept = [p.preserved for p in self.parts]
        preserved = Proportion(sum(q.hits for q in kept), sum(q.n for q in kept), kept[0].z)
        v = [x for p in self.parts for x in p.valid if x is not None]
        return Accuracy(Proportion(sum(outcomes), len(outcomes)), preserved, tuple(outcomes),
                        round(sum(v) / len(v), 4) if v else None)

    def draws(self) -> list[float | None]:
        """Each draw's erased accuracy, in draw order (the spread the pooled interval does not show)."""
        return [p.accuracy().erased.value for p in self.parts]
