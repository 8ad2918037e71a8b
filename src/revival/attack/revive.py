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

from ..errors import RevivalError
from ..seeding import item_seed
from .completion import SOLVERS, complete
from .magnitudes import MAGNITUDES, get_magnitude
from .signs import top_k_signs


@dataclass(frozen=True)
class AttackConfig:
    """Settings of the revival attack.

    solver: completion solver name (see `completion.SOLVERS`); "svt" is the paper's recipe.
    rank: low-rank basis size / rank cap (ignored by "svt"); None = the solver's default
        (regress: 32; softimpute: 96).
    lam: regularization; None = the solver's default. softimpute: the soft threshold (default
        the (rank+1)-th singular value); regress: the ridge on the low-rank basis coefficients
        (default 3, spectral); ignored by svt.
    keep: fraction of pruned positions whose sign is retained, in (0, 1] (paper: 0.6).
    magnitude: magnitude rule name (see `magnitudes.MAGNITUDES`); paper: "neuron-max".
    seed: seeds every random choice.
    device: "cpu", "cuda", ...; None = CUDA when available, else CPU.
    max_iters, tol: solver iteration cap and tolerance; None = the solver's default.
    side: offer side information (the intact ff.net.0.proj rows of the same hidden units) to
        solvers that take it, when present; regress then keeps it only where it validates.
    """

    solver: str = "regress"
    rank: int | None = None
    lam: float | None = None
    keep: float = 0.6
    magnitude: str = "neuron-max"
    seed: int = 0
    device: str | None = None
    max_iters: int | None = None
    tol: float | None = None
    side: bool = True

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise RevivalError(f"solver must be one of {', '.join(sorted(SOLVERS))}, got {self.solver!r}.")
        if self.magnitude not in MAGNITUDES:
            raise RevivalError(f"magnitude must be one of {', '.join(MAGNITUDES)}, got {self.magnitude!r}.")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0):
            raise RevivalError(f"rank must be a non-negative integer or None, got {self.rank!r}.")
        if self.lam is not None and not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise RevivalError(f"lam must be a non-negative number or None, got {self.lam!r}.")
        if not isinstance(self.keep, (int, float)) or isinstance(self.keep, bool) or not 0.0 < self.keep <= 1.0:
            raise RevivalError(f"keep must be a fraction in (0, 1], got {self.keep!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise RevivalError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.side, bool):
            raise RevivalError(f"side must be True or False, got {self.side!r}.")
        if self.max_iters is not None and (isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 1):
            raise RevivalError(f"max_iters must be a positive integer or None, got {self.max_iters!r}.")
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise RevivalError(f"tol must be a positive number or None, got {self.tol!r}.")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError):
                raise RevivalError(f"device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}.") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise RevivalError("device 'cuda' was asked for but CUDA is not available.")


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


def side_features(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, int],
                  side: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
    """Side vectors [d, out, in] for the matrix `name` of `shape` [out, in], or None.

    Hidden unit j (column j of W) is read in by row j of the block's intact input projection
    `ff.net.0.proj.weight` [in or 2*in, out], whose rows live in the same space as W's
    columns. A GEGLU projection [2*in, out] gives each unit two vectors (value row j and gate
    row in + j), a plain one [in, out] gives one. Taken from `side[name]` when given (a
    projection matrix of either shape), else looked up in `tensors` next to an
    `...ff.net.2.weight` name. None when absent, non-finite or of a non-matching shape.
    The result is a strided view of the projection (its dtype; no copy).
    """
    out_dim, n_in = shape
    p = None
    if side is not None and name in side:
        p = side[name]
    elif name.endswith("ff.net.2.weight"):
        p = tensors.get(name[: -len("ff.net.2.weight")] + "ff.net.0.proj.weight")
    if p is None or p.ndim != 2 or p.shape[1] != out_dim or not p.is_floating_point():
        return None
    if p.shape[0] not in (n_in, 2 * n_in) or not bool(torch.isfinite(p).all()):
        return None
    # strided views, no copy: [d, in, out] -> [d, out, in]
    return p.reshape(p.shape[0] // n_in, n_in, out_dim).permute(0, 2, 1)


def revive_matrix(w: torch.Tensor, config: AttackConfig, *, name: str = "",
                  features: torch.Tensor | None = None, device: torch.device | None = None
                  ) -> tuple[torch.Tensor, int, int, int, dict]:
    """Revive one matrix: returns (new matrix in w's dtype, pruned, kept, iterations, solver info)."""
    device = device or torch.device("cpu")
    missing = w == 0
    n_pruned = int(missing.sum())
    if n_pruned == 0:
        return w, 0, 0, 0, {}
    seed = item_seed(config.seed, name)
    wd = w.to(device)
    md = missing.to(device)
    kwargs: dict = {"seed": seed}
    if config.rank is not None:
        kwargs["rank"] = config.rank
    if config.lam is not None:
        kwargs["lam"] = config.lam
    if config.max_iters is not None:
        kwargs["max_iters"] = config.max_iters
    if config.tol is not None:
        kwargs["tol"] = config.tol
    if features is not None:
        kwargs["side"] = features.to(device)
    comp = complete(wd, md, solver=config.solver, **kwargs)
    kept, signs = top_k_signs(comp.matrix, md, config.keep, comp.confidence)
    rows, cols = kept.nonzero(as_tuple=True)          # row-major order
    gen = torch.Generator(device="cpu").manual_seed(seed)
    values = get_magnitude(config.magnitude)(
        wd, ~md, rows, cols, signs[rows, cols].double(), comp.matrix[rows, cols].double(), gen)
    out = w.clone()  # on w's device: every tensor meeting it is moved there
    out[rows.to(out.device), cols.to(out.device)] = values.to(device=out.device, dtype=w.dtype)
    return out, n_pruned, int(rows.numel()), comp.iterations, comp.info


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
    from ..layers import check_matrices

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
        from .partners import revive_layer  # partner side information both ways, whole rows

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


SOLVERS_TAKE_SIDE = frozenset({"regress"})


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
    from ..io import CheckpointWriter, TensorStore, load_checkpoint, plan_outputs, write_report
    from ..layers import check_finite, target_layers
    from ..masks import MaskReport, mask_stats

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
