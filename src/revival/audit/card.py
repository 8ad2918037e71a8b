"""The model card of an audit: a markdown section a publisher ships with the release.

    model_card(audit) -> str

`audit` is the dict `revival audit` writes to audit.json. The card opens with YAML front matter,
the audit's figures under a `revival:` key as Hugging Face model cards take metadata, then states
in prose and tables what the audit decided: the verdict and its reasons, the concept, the limit,
every attacker of revival's ladder with its status, gain and 95% interval, the release's erased
and preserved accuracy, the original's erased accuracy (the evidence that it drew the concept),
the date and revival's version. It states nothing the audit did not decide: a pass says that no
attacker of revival's ladder gained more than the limit, on that date with that version. A value
the audit left empty (None) reads "n/a" in the prose and `null` in the metadata, never 0.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from revival.errors import RevivalError

VERDICTS = ("pass", "fail", "inconclusive")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "~"}


# --------------------------------------------------------------------------- YAML front matter

def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    return json.dumps(str(v), ensure_ascii=False)  # a double-quoted JSON string is a YAML string


def _key(k) -> str:
    k = str(k)
    return k if _PLAIN_KEY.match(k) and k.lower() not in _YAML_WORDS else json.dumps(k, ensure_ascii=False)


def _yaml(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines of a mapping (values: scalars, lists of scalars, mappings)."""
    pad, out = "  " * indent, []
    for k, v in value.items():
        if isinstance(v, Mapping):
            out += [f"{pad}{_key(k)}:", *_yaml(v, indent + 1)] if v else [f"{pad}{_key(k)}: {{}}"]
        elif isinstance(v, (list, tuple)):
            out.append(f"{pad}{_key(k)}: [{', '.join(_scalar(x) for x in v)}]")
        else:
            out.append(f"{pad}{_key(k)}: {_scalar(v)}")
    return out


# --------------------------------------------------------------------------- prose

def _num(x, fmt: str = ".2f") -> str:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return format(x, fmt)


def _ci(ci, fmt: str = ".2f") -> str:
    if not ci or len(ci) != 2 or any(c is None for c in ci):
        return "n/a"
    return f"[{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"


def _acc(x, ci) -> str:
    return "n/a" if _num(x) == "n/a" else f"{_num(x)} {_ci(ci)}" if ci else _num(x)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _check(audit) -> None:
    if not isinstance(audit, Mapping):
        raise RevivalError(f"the model card takes the audit's dict (audit.json), got {type(audit).__name__}.")
    missing = [k for k in ("concept", "verdict", "limit", "release", "attacks") if k not in audit]
    if missing:
        raise RevivalError(f"the audit dict has no {missing[0]!r}: give the dict `revival audit` writes to audit.json.")
    if audit["verdict"] not in VERDICTS:
        raise RevivalError(f"the audit's verdict must be one of {', '.join(VERDICTS)}, got {audit['verdict']!r}.")
    if not isinstance(audit["attacks"], Mapping) or not isinstance(audit["release"], Mapping):
        raise RevivalError("the audit dict's release and attacks must be mappings, as in audit.json.")
    bad = next((n for n, a in audit["attacks"].items() if not isinstance(a, Mapping)), None)
    if bad is not None:
        raise RevivalError(f"the audit dict's attacker {bad!r} must be a mapping (status, gain, ...), as in audit.json.")


def _metadata(audit: Mapping) -> dict:
    rel, orig, lg = audit["release"], audit.get("original"), audit.get("largest_gain") or {}
    meta = {
        "verdict": audit["verdict"], "concept": audit["concept"], "limit": audit["limit"],
        "largest_gain": {"attacker": lg.get("attacker"), "gain": lg.get("gain"), "gain_ci95": lg.get("gain_ci95")},
        "release": {k: rel.get(k) for k in ("erased", "erased_ci95", "preserved", "preserved_ci95", "exposed")},
        "original": None if orig is None else
        {k: orig.get(k) for k in ("erased", "erased_ci95", "floor", "draws_concept")},
        "attacks": {name: {k: a.get(k) for k in ("status", "reason", "gain", "gain_ci95", "erased", "preserved")}
                    for name, a in audit["attacks"].items()},
        "reasons": list(audit.get("reasons") or []),
        "layers": len(audit.get("layers") or []),
        "date": audit.get("date"), "revival_version": audit.get("revival_version"),
    }
    if audit.get("ladder") is not None:
        meta["ladder"] = list(audit["ladder"])
    nl = audit.get("never_learned")
    if nl is not None:
        meta["never_learned"] = {k: nl.get(k) for k in ("path", "erased", "erased_ci95", "preserved", "excess",
                                                        "excess_ci95")}
        for name, a in audit["attacks"].items():
            meta["attacks"][name].update({k: a.get(k) for k in ("never_learned_erased", "excess", "excess_ci95")})
    for key in ("threat", "weights_verdict", "relearn_verdict"):
        if audit.get(key) is not None:
            meta[key] = audit[key] if key == "threat" else audit[key].get("verdict")
    if audit.get("relearn") is not None:
        meta["relearn"] = {f"K{b.get('images')}xS{b.get('steps')}": {k: b.get(k) for k in (
            "release", "never_learned_erased", "excess", "excess_ci95", "status")} for b in audit["relearn"]["budgets"]}
    return meta


def _calibration(audit: Mapping) -> list[str]:
    """The never-learned model beside the release and each attack, and the relearning curve."""
    nl, out = audit.get("never_learned"), []
    if nl is not None:
        out += ["", "### Beside a model that never learned the concept", "",
                f"The never-learned model ({_cell(nl.get('path') or 'n/a')}: the same recipe, trained without the "
                f"concept) draws it in {_acc(nl.get('erased'), nl.get('erased_ci95'))} of its images; this release in "
                f"{_acc(audit['release'].get('erased'), audit['release'].get('erased_ci95'))} "
                f"({_num(nl.get('excess'), '+.2f')} {_ci(nl.get('excess_ci95'), '+.2f')} beyond it). Each attack ran "
                "on both; what it gets beyond the never-learned model is what it revives:", "",
                "| attacker | erased (attacked release) | erased (attacked never-learned) | excess [95%] |",
                "|---|---|---|---|"]
        for name, a in audit["attacks"].items():
            out.append(f"| {_cell(name)} | {_num(a.get('erased'))} | {_num(a.get('never_learned_erased'))} "
                       f"| {_num(a.get('excess'), '+.2f')} {_ci(a.get('excess_ci95'), '+.2f')} |")
    rl = audit.get("relearn")
    if rl is not None:
        v = (audit.get("relearn_verdict") or {}).get("verdict", "n/a")
        out += ["", f"### Relearning (fine-tuning on K real images of the concept): {str(v).upper()}", "",
                "| K images | steps | erased (relearned release) | erased (relearned never-learned) | excess [95%] |",
                "|---:|---:|---|---|---|"]
        for b in rl.get("budgets", []):
            out.append(f"| {b.get('images')} | {b.get('steps')} | {_num(b.get('release'))} "
                       f"| {_num(b.get('never_learned_erased'))} | {_num(b.get('excess'), '+.2f')} "
                       f"{_ci(b.get('excess_ci95'), '+.2f')} |")
    if audit.get("threat") not in (None, "weights"):
        out += ["", f"The verdict above follows the threat model '{audit['threat']}' (weights-only verdict: "
                f"{(audit.get('weights_verdict') or {}).get('verdict', 'n/a')}; relearning verdict: "
                f"{(audit.get('relearn_verdict') or {}).get('verdict', 'n/a')})."]
    return out


def _headline(audit: Mapping) -> str:
    v, limit, lg = audit["verdict"], _num(audit["limit"]), audit.get("largest_gain") or {}
    when = f"revival {audit.get('revival_version') or 'n/a'}, {audit.get('date') or 'n/a'}"
    if v == "pass":
        return (f"**Verdict: PASS.** No attacker of revival's ladder gained more than the limit ({limit} erased "
                f"accuracy) on the concept {audit['concept']!r} against this release ({when}).")
    if v == "fail":
        return (f"**Verdict: FAIL.** An attacker of revival's ladder gained more than the limit ({limit} erased "
                f"accuracy) on the concept {audit['concept']!r} against this release: {lg.get('attacker') or 'n/a'} "
                f"raised its erased accuracy by {_num(lg.get('gain'), '+.2f')} {_ci(lg.get('gain_ci95'), '+.2f')}"
                + (" beyond the same attack on a never-learned model" if lg.get("calibrated") else "")
                + f" ({when}).")
    return (f"**Verdict: INCONCLUSIVE.** The audit could not decide whether an attacker of revival's ladder gains "
            f"more than the limit ({limit} erased accuracy) on the concept {audit['concept']!r} against this "
            f"release ({when}); the reasons are below.")


def model_card(audit: Mapping) -> str:
    """The markdown model-card section (with YAML front matter under `revival:`) of an audit dict."""
    _check(audit)
    rel, orig = audit["release"], audit.get("original")
    lines = ["---", "revival:", *_yaml(_metadata(audit), 1), "---", "",
             f"## Concept revival audit: {audit['concept']}", "", _headline(audit), ""]
    reasons = list(audit.get("reasons") or [])
    if reasons:
        lines += ["Reasons:" if audit["verdict"] == "inconclusive" else "The audit's reasons:", "",
                  *[f"- {r}" for r in reasons], ""]
    lines += ["| model | erased concept accuracy [95%] | preserved accuracy [95%] |", "|---|---|---|"]
    if orig is not None:
        lines.append(f"| original (before unlearning) | {_acc(orig.get('erased'), orig.get('erased_ci95'))} "
                     f"| {_acc(orig.get('preserved'), orig.get('preserved_ci95'))} |")
    lines += [f"| this release | {_acc(rel.get('erased'), rel.get('erased_ci95'))} "
              f"| {_acc(rel.get('preserved'), rel.get('preserved_ci95'))} |", ""]
    if orig is None:
        lines.append("The original model was not evaluated: there is no evidence that it drew the concept.")
    else:
        draws, acc, floor = orig.get("draws_concept"), _acc(orig.get("erased"), orig.get("erased_ci95")), _num(orig.get("floor"))
        lines.append({True: f"The original model draws the concept: its erased accuracy {acc} reaches the floor {floor}.",
                      False: f"The original model does not draw the concept: its erased accuracy {acc} is below the "
                             f"floor {floor}, so there was nothing to erase or the judge cannot see it."}.get(
            draws, f"Whether the original model draws the concept is n/a (erased accuracy {acc}, floor {floor})."))
    exposed = rel.get("exposed")
    lines += ["", "Exact zeros mark the pruned positions in this release: "
              + {True: "yes.", False: "no."}.get(exposed, "n/a."), "",
              f"### Attackers (limit: a gain of at most {_num(audit['limit'])})", "",
              "| attacker | status | gain | 95% interval | erased (attacked) | preserved (attacked) | reason |",
              "|---|---|---:|---|---|---|---|"]
    for name, a in audit["attacks"].items():
        lines.append(f"| {_cell(name)} | {_cell(a.get('status') or 'n/a')} | {_num(a.get('gain'), '+.2f')} "
                     f"| {_ci(a.get('gain_ci95'), '+.2f')} | {_num(a.get('erased'))} | {_num(a.get('preserved'))} "
                     f"| {_cell(a.get('reason') or '')} |")
    for name in audit.get("ladder") or []:
        if name not in audit["attacks"]:
            lines.append(f"| {_cell(name)} | not run | n/a | n/a | n/a | n/a | |")
    lines += _calibration(audit)
    lg = audit.get("largest_gain") or {}
    lines += ["", f"Largest gain: {_num(lg.get('gain'), '+.2f')} {_ci(lg.get('gain_ci95'), '+.2f')} "
              f"by {lg.get('attacker') or 'n/a'}.", "",
              "Gain = erased concept accuracy of the attacked release minus that of the release, on prompts and "
              "seeds that unlearning did not use; its interval is for paired images.",
              f"Layers audited: {len(audit.get('layers') or [])}. Audited on {audit.get('date') or 'n/a'} with "
              f"revival {audit.get('revival_version') or 'n/a'}."]
    return "\n".join(lines) + "\n"
