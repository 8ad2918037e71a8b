"""What a release shows: format, naming, dtypes, target layers, pruned positions, and a verdict
for publishers -- can the pruned positions be read off this release?"""
from __future__ import annotations

from .masks import MaskReport

# Trained dense weights hold almost no exact zeros; pruning leaves ~1-7% of a layer.
EXPOSED_FRACTION = 1e-3


def exposure(report: MaskReport) -> tuple[bool, str]:
    """(exposed, verdict): do exact zeros in the target layers mark pruned positions?"""
    n, total = report.pruned, report.total
    layers = sum(s.pruned > 0 for s in report.layers)
    frac = n / total if total else 0.0
    if frac >= EXPOSED_FRACTION:
        return True, (f"exposed: {n:,} exact zeros ({100 * frac:.2f}%) in {layers} of {len(report.layers)} "
                      "target layers mark the pruned positions; the revival attack reads them "
                      "(`revival attack`), Gaussian obfuscation hides them (`revival defend`).")
    if n:
        return False, (f"{n:,} exact zeros ({100 * frac:.4f}%): too few to be a pruning mask "
                       "(trained weights hold a few by chance); nothing for the attack to read.")
    return False, ("no exact zeros in the target layers: no pruned positions to read off "
                   "(not pruned, or obfuscated).")


def inspect_checkpoint(path, layers: str | None = None) -> dict:
    """JSON-able description of a checkpoint: format, naming, dtypes, target layers, pruned
    statistics, and the exposure verdict (`exposed`, `verdict`)."""
    from .io import load_checkpoint
    from .layers import DEFAULT_LAYERS, check_finite, detect_pruned_layers, select_layers
    from .masks import guess_method, mask_report

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
    info["exposed"], info["verdict"] = exposure(report)
    return info
