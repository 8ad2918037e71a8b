"""What a release shows: format, naming, dtypes, target layers, pruned positions, the marks it
carries, and a verdict for publishers -- can the changed positions be read off this release?

The verdict is `revival.release.exposure.release_exposure`, the criterion `revival audit` shares: a layer
found pruned (more exact zeros than chance explains) is exposed, and so is a tensor holding a
value repeated, or values copied, far beyond chance."""
from __future__ import annotations

from revival.release.masks import MaskReport

# Kept for callers of `exposure(report)`: trained dense weights hold almost no exact zeros.
EXPOSED_FRACTION = 1e-3


def exposure(report: MaskReport) -> tuple[bool, str]:
    """(exposed, verdict) from the zero counts of a MaskReport alone (a quick look; the verdict of
    `inspect_checkpoint` is `revival.release.exposure.release_exposure`, which also reads the marks)."""
    n, total = report.pruned, report.total
    layers = sum(s.pruned > 0 for s in report.layers)
    frac = n / total if total else 0.0
    if frac >= EXPOSED_FRACTION:
        return True, (f"exposed: {n:,} exact zeros ({100 * frac:.2f}%) in {layers} of {len(report.layers)} "
                      "target layers mark the pruned positions; the revival attack reads them "
                      "(`revival attack`), a defense hides them (`revival defend`).")
    return _quiet(report)


def _quiet(report: MaskReport) -> tuple[bool, str]:
    n, total = report.pruned, report.total
    frac = n / total if total else 0.0
    if n:
        return False, (f"{n:,} exact zeros ({100 * frac:.4f}%): too few to be a pruning mask "
                       "(trained weights hold a few by chance); nothing for the attack to read.")
    return False, ("no exact zeros in the target layers: no pruned positions to read off "
                   "(not pruned, or defended).")


def verdict(report: MaskReport, exp) -> str:
    """One paragraph: exposed (and why), or not (and the marks that do not expose positions)."""
    if exp.exposed:
        return "exposed: " + " ".join(exp.reasons) + " A defense hides them (`revival defend`)."
    _, text = _quiet(report)
    other = []
    for kind, label in (("dead_units", "dead units"), ("unit_outliers", "units of outlying spread")):
        found = exp.marks.get(kind) or {}
        if found:
            count = sum(v.get("units", 0) for v in found.values())
            other.append(f"{count} {label} in {len(found)} tensor(s)")
    if other:
        text += (" Other marks: " + ", ".join(other) + " (they tell that the release was changed and where "
                 "units were, not which entries; retired units hold nothing to revive).")
    else:
        text += " No mark found: no repeated or copied values, no dead units, no outlying units."
    return text


def inspect_checkpoint(path, layers: str | None = None) -> dict:
    """JSON-able description of a checkpoint: format, naming, dtypes, target layers, pruned
    statistics, the marks found (`exposure`: `release_exposure(...).to_dict()`), and the exposure
    verdict (`exposed`, `verdict`)."""
    from revival.release.exposure import release_exposure
    from revival.io import load_checkpoint
    from revival.release.layers import DEFAULT_LAYERS, check_finite, detect_pruned_layers, select_layers
    from revival.release.masks import guess_method, mask_report

    ckpt = load_checkpoint(path)
    found = None
    if layers is None:  # the layers pruned, found by their exact zeros (ff.net.2 when none is)
        found = detect_pruned_layers(ckpt.tensors)
        names = [p.name for p in found] or select_layers(ckpt.tensors, DEFAULT_LAYERS)
    else:
        names = select_layers(ckpt.tensors, layers)
    check_finite(ckpt.tensors, names, str(ckpt.path))
    info = ckpt.summary(names)
    info["layer_pattern"] = layers or ("found by their exact zeros" if found else DEFAULT_LAYERS)
    if found is not None:
        info["found"] = {"layers": [p.to_dict() for p in found], "method": guess_method(found)}
    report = mask_report(ckpt.tensors, names)
    info["pruned"] = report.to_dict()
    exp = release_exposure(ckpt.tensors, None if layers is None else names)
    info["exposure"] = exp.to_dict()
    info["exposed"], info["verdict"] = exp.exposed, verdict(report, exp)
    return info
