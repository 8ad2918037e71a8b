"""The revival attack over a whole checkpoint (Zhang et al., "Roots Beneath the Cut", CVPR 2026).

For each target matrix: pruned positions = exact zeros -> matrix completion -> Top-K Sign
Retention -> a magnitude rule. Only kept pruned positions change; every other entry of every
matrix is returned bit-identical, in the input's dtype.

Example::

    >>> updates, result = revive(ckpt.tensors, select_layers(ckpt.tensors), AttackConfig())
    >>> result.to_dict()["totals"]["kept"]
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from revival.errors import RevivalError
from revival.attack.config import SOLVERS_TAKE_SIDE, AttackConfig
from revival.attack.matrix import revive_matrix, side_features
from revival.attack.partners import revive_layer

__all__ = ["AttackConfig", "AttackResult", "LayerResult", "SOLVERS_TAKE_SIDE", "revive", "revive_checkpoint",
           "revive_matrix", "side_features"]


@dataclass
class LayerResult:
    name: str
    shape: list[int]
    pruned: int
    kept: int
    iterations: int
    seconds: float
    skipped: bool = False
    side: bool = False                 # side information was used (found, and chosen by validation)
    validation: dict | None = None     # regress: held-out sign accuracy with / without side info
    partner: str | None = None         # the other linear of the same hidden units (side information)
    partner_pruned: bool = False       # the partner was itself pruned (its pruned entries: missing)
    side_set: str | None = None        # which side vectors validation chose
    whole_rows: dict | None = None     # rows with no surviving entry: estimated or not recoverable

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttackResult:
    config: AttackConfig
    device: str
    layers: list[LayerResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[str]:
        return [l.name for l in self.layers if l.skipped]

    def to_dict(self) -> dict:
        done = [l for l in self.layers if not l.skipped]
        return {
            "config": asdict(self.config),
            "device": self.device,
            "layers": [l.to_dict() for l in self.layers],
            "skipped": self.skipped,
            "totals": {
                "layers": len(done),
                "weights": sum(math.prod(l.shape) for l in done),
                "pruned": sum(l.pruned for l in done),
                "kept": sum(l.kept for l in done),
                "iterations": sum(l.iterations for l in done),
                "seconds": round(self.seconds, 4),
            },
        }


def revive(
    tensors: dict[str, torch.Tensor],
    layers: list[str],
    config: AttackConfig | None = None,
    *,
    side: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], AttackResult]:
    """Run the revival attack on `layers` of a state dict.

    Args:
        tensors: the full state dict (diffusers naming); not modified.
        layers: names of the target matrices [out, in].
        config: AttackConfig (default: AttackConfig()).
        side: optional {layer name: feature matrix} overriding the automatic lookup of the
            block's ff.net.0.proj.weight (used only by solvers that take side information).
        progress: show a progress bar.
    Returns:
        (updates, result): updates maps each attacked layer to its revived tensor (same dtype
        and shape; unpruned entries bit-identical); layers with no pruned entry are skipped.
    Raises:
        RevivalError on a missing/non-2-D layer, NaN/inf weights, or when no layer has a
        pruned entry.
    """
    config = config or AttackConfig()
    device = torch.device(config.device) if config.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from revival.release.layers import check_matrices

    check_matrices(tensors, layers, "the attack")
    if not any(bool((tensors[n] == 0).any()) for n in layers):
        raise RevivalError("no target layer has any pruned (exactly zero) weight, so there is nothing to revive.")

    result = AttackResult(config=config, device=str(device))
    updates: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="revive", unit="layer")
    for name in it:
        w = tensors[name]
        t0 = time.perf_counter()
        out, n_pruned, n_kept, iters, info = revive_layer(tensors, name, config, device, side)
        secs = time.perf_counter() - t0
        if n_pruned == 0:
            result.layers.append(LayerResult(name, list(w.shape), 0, 0, 0, round(secs, 4), skipped=True))
            continue
        updates[name] = out
        result.layers.append(LayerResult(name, list(w.shape), n_pruned, n_kept, iters, round(secs, 4),
                                         side=bool(info.get("side", False)),
                                         validation=info.get("validation"), partner=info.get("partner"),
                                         partner_pruned=bool(info.get("partner_pruned", False)),
                                         side_set=info.get("side_set") if info.get("side") else None,
                                         whole_rows=info.get("whole_rows")))
    result.seconds = time.perf_counter() - start
    return updates, result


def revive_checkpoint(path, output, config: AttackConfig | None = None, *, layers: str | None = None,
                      report=None, overwrite: bool = False, progress: bool = False) -> dict:
    """The whole attack on a checkpoint file: load -> revive -> write the revived checkpoint (the
    input's format) and its JSON report (`report`, default `revival.io.default_report_path`).

    Streams layer by layer: each target layer is read, revived, patched into the output and
    dropped before the next, so memory holds about one layer (plus its side information).
    Every bad input (nothing pruned, NaN/inf, output or report == an input, an existing output
    without `overwrite`) raises RevivalError before anything is written; an interruption leaves
    no output. Returns the report dict (also written to disk).
    """
    from revival.io import CheckpointWriter, TensorStore, load_checkpoint, plan_outputs, write_report
    from revival.release.layers import check_finite, target_layers
    from revival.release.masks import MaskReport, mask_stats

    t0 = time.perf_counter()
    ckpt = load_checkpoint(path)
    output, report_path = plan_outputs(ckpt, output, report, overwrite=overwrite)
    names = target_layers(ckpt.tensors, layers)  # default: every layer found pruned by its zeros
    config = config if config is not None else AttackConfig()
    release = ckpt.tensors.release if isinstance(ckpt.tensors, TensorStore) else (lambda *a: None)
    stats = []
    for name in names:  # validate every layer before writing anything
        check_finite(ckpt.tensors, [name], str(ckpt.path))
        stats.append(mask_stats(name, ckpt.tensors[name]))
        release(name)
    masks = MaskReport(tuple(stats)).require_pruned(str(ckpt.path))
    t1 = time.perf_counter()
    result = None
    pending: list = []  # skipped (unpruned) layers seen before the first result
    seconds_attack = 0.0
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="revive", unit="layer")
    with CheckpointWriter(ckpt, output, overwrite=overwrite) as writer:
        t_write = time.perf_counter() - t1
        for name, st in zip(it, stats):
            if st.pruned == 0:
                layer = LayerResult(name, list(st.shape), 0, 0, 0, 0.0, skipped=True)
                (result.layers if result is not None else pending).append(layer)
                continue
            ta = time.perf_counter()
            updates, res = revive(ckpt.tensors, [name], config, progress=False)
            seconds_attack += time.perf_counter() - ta
            tw = time.perf_counter()
            for n, t in updates.items():
                writer.write(n, t)
            del updates
            release()
            t_write += time.perf_counter() - tw
            if result is None:
                result = res
                result.layers[:0] = pending
            else:
                result.layers.extend(res.layers)
                result.seconds += res.seconds
        tc = time.perf_counter()
    t_write += time.perf_counter() - tc
    t3 = time.perf_counter()
    data = {
        "input": str(ckpt.path), "output": str(writer.path), "format": ckpt.format, "naming": ckpt.naming,
        "layer_pattern": layers or "found by their exact zeros", "mask": masks.to_dict(), "attack": result.to_dict(),
        "seconds": {"load_and_check": round(t1 - t0, 4), "attack": round(seconds_attack, 4),
                    "write": round(t_write, 4), "total": round(t3 - t0, 4)},
    }
    data["report"] = str(write_report(report_path, data, ckpt.input_paths()))
    return data
