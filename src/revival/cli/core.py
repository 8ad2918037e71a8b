"""CLI verbs on checkpoints: `inspect`, `attack`, `defend`, `score`.

Thin: parse, call the API (checkpoint, masks, attack, defense, metrics), print, write the JSON
report. Every bad input surfaces as a RevivalError (one sentence; `revival.cli.main` prints it
and exits 2) before any output file is written.

Reports: `attack` and `defend` write a JSON report beside the output by default
(`OUT.report.json` for a file, `OUT/revival_report.json` for a diffusers folder; `--report PATH`
chooses another). `inspect --json` and `score --json` print JSON to stdout instead of a table;
`score --report PATH` also writes it to a file.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import RevivalError

_LAYERS_HELP = ("regex (re.search) choosing the target layers by name, diffusers or the file's own "
                "naming (default: every transformer block's ff.net.2.weight)")


def register(sub) -> None:
    p = sub.add_parser("inspect", help="format, dtype, target layers and pruned positions of a checkpoint",
                       description="Describe a UNet checkpoint (diffusers folder, .safetensors, .ckpt/.pt): "
                                   "format, naming, dtypes, the target layers and their pruned (exactly zero) "
                                   "positions with their row/column clustering.")
    p.add_argument("checkpoint", type=Path, help="UNet checkpoint: diffusers folder, .safetensors or .ckpt/.pt")
    p.add_argument("--layers", default=None, help=_LAYERS_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_inspect)

    a = sub.add_parser("attack", help="revive the pruned weights of an unlearned checkpoint",
                       description="The revival attack: pruned positions (exact zeros) -> matrix completion -> "
                                   "Top-K sign retention -> magnitude rule. Writes the revived checkpoint in the "
                                   "input's format and a JSON report beside it.")
    a.add_argument("checkpoint", type=Path, help="the pruned (unlearned) UNet checkpoint")
    a.add_argument("-o", "--output", type=Path, required=True, help="where to write the revived checkpoint")
    a.add_argument("--solver", default=None, help="completion solver (default: the attack's fast default; "
                                                    "'svt' = the paper's reference recipe)")
    a.add_argument("--rank", type=int, default=None, help="rank cap of rank-restricted solvers")
    a.add_argument("--lambda", dest="lam", type=float, default=None, help="regularization: regress = damping of the low-rank basis "
                   "(default 3); softimpute = soft threshold")
    a.add_argument("--no-side", action="store_true",
                   help="do not use the intact ff.net.0.proj rows as side information")
    a.add_argument("--keep", type=float, default=None, help="Top-K sign retention: fraction of pruned positions "
                                                           "whose sign is kept (default 0.6, as in the paper)")
    a.add_argument("--magnitude", default=None, help="magnitude rule, e.g. neuron-max (the paper's), sample, mean, completed")
    a.add_argument("--max-iters", type=int, default=None, help="solver iteration cap (default: the solver's)")
    a.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    a.add_argument("--seed", type=int, default=None, help="seed of every random choice (default 0)")
    a.add_argument("--layers", default=None, help=_LAYERS_HELP)
    a.add_argument("--report", type=Path, default=None,
                   help="JSON report path (default: OUTPUT.report.json, or OUTPUT/revival_report.json for a folder)")
    a.add_argument("--attacker", default="zeros",
                   help="how the pruned positions are found: zeros (the paper's, default), residual, method-aware, "
                        "columns, reprune (see revival.attack.attackers)")
    a.add_argument("--concept", default=None, help="method-aware: the erased concept (its public prompts)")
    a.add_argument("--model", default="testbed", help="method-aware: testbed or a local SD pipeline folder")
    a.add_argument("--fraction", type=float, default=None,
                   help="residual/columns/reprune: share of each matrix's entries to locate")
    a.add_argument("--original", type=Path, default=None,
                   help="--attacker other than zeros: the weights before unlearning, to score the localisation")
    a.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    a.set_defaults(func=_attack)

    d = sub.add_parser("defend", help="hide the pruned positions of a release (default: resample)",
                       description="Defend a pruned release (revival.defense): resample (default) fills every pruned "
                                   "position with Gaussian noise of the surviving weights of the same row (or layer) "
                                   "and replaces whole the hidden units where pruning concentrated; gaussian fills "
                                   "only the pruned positions; decoy fills them and zeroes as many decoys. Strips "
                                   "metadata that tells of pruning; writes the checkpoint in the input's format.")
    d.add_argument("--method", default=None, help="resample (default), gaussian or decoy")
    d.add_argument("--scale", type=float, default=1.0, help="noise scale: multiplies the noise's std (default 1)")
    d.add_argument("--column-share", type=float, default=None,
                   help="resample: replace the hidden units with at least this share of rows pruned (default 0.4)")
    d.add_argument("--hot", choices=("column", "row"), default=None,
                   help="resample: noise scale of those units: their own surviving weights' (column, default) or the rows'")
    d.add_argument("--fresh-units", action="store_true",
                   help="resample: also redraw those units' ff.net.0.proj rows (costlier; see README)")
    d.add_argument("checkpoint", type=Path, help="the pruned (unlearned) UNet checkpoint")
    d.add_argument("-o", "--output", type=Path, required=True, help="where to write the obfuscated checkpoint")
    d.add_argument("--stats", choices=("row", "layer"), default="row",
                   help="noise statistics from the same row (default) or the whole layer")
    d.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    d.add_argument("--layers", default=None, help=_LAYERS_HELP)
    d.add_argument("--report", type=Path, default=None,
                   help="JSON report path (default: OUTPUT.report.json, or OUTPUT/revival_report.json for a folder)")
    d.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    d.set_defaults(func=_defend)

    s = sub.add_parser("score", help="sign recovery of a revived checkpoint against the original",
                       description="Per layer and overall: pruned count, kept fraction, sign accuracy on kept and "
                                   "on all pruned positions, relative error and cosine of (R-P) vs (O-P) on the "
                                   "pruned positions, and the number of unpruned entries the revival changed.")
    s.add_argument("--original", type=Path, required=True, help="the checkpoint before pruning")
    s.add_argument("--pruned", type=Path, required=True, help="the pruned (unlearned) checkpoint")
    s.add_argument("--revived", type=Path, required=True, help="the revived checkpoint")
    s.add_argument("--layers", default=None, help=_LAYERS_HELP + "; chosen in the pruned checkpoint")
    s.add_argument("--json", action="store_true", help="print JSON to stdout instead of the table")
    s.add_argument("--report", type=Path, default=None, help="also write the JSON to this file")
    s.set_defaults(func=_score)


# --------------------------------------------------------------------------- helpers

def default_report_path(output: Path, fmt: str) -> Path:
    """OUT.report.json beside a file output; OUT/revival_report.json inside a folder output."""
    output = Path(output)
    return output / "revival_report.json" if fmt == "diffusers" else output.with_name(output.name + ".report.json")


def _check_report(report: Path, output: Path, inputs) -> None:
    from ..io import check_output_path

    check_output_path(report, list(inputs))
    report, output = Path(report), Path(output)
    if report.resolve() == output.resolve():
        raise RevivalError(f"the report path {report} is the output path; choose another.")
    if report.is_dir():
        raise RevivalError(f"the report path {report} is a folder.")
    if report.parent.resolve() != output.resolve() and not report.parent.is_dir():
        raise RevivalError(f"the report folder {report.parent} does not exist.")


def inspect_checkpoint(path, layers: str | None = None) -> dict:
    """JSON-able description of a checkpoint: format, naming, dtypes, target layers, pruned stats."""
    from ..io import load_checkpoint
    from ..layers import DEFAULT_LAYERS, check_finite, select_layers
    from ..masks import mask_report

    ckpt = load_checkpoint(path)
    names = select_layers(ckpt.tensors, layers or DEFAULT_LAYERS)
    check_finite(ckpt.tensors, names, str(ckpt.path))
    info = ckpt.summary(names)
    info["layer_pattern"] = layers or DEFAULT_LAYERS
    report = mask_report(ckpt.tensors, names)
    info["pruned"] = report.to_dict()
    info["exposed"], info["verdict"] = exposure(report)
    return info


EXPOSED_FRACTION = 1e-3   # trained dense weights hold almost no exact zeros; pruning leaves ~1-7%


def exposure(report) -> tuple[bool, str]:
    """Can the pruned positions be read off this release? (exact zeros in the target layers)"""
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


def attack_checkpoint(path, output, config=None, *, layers: str | None = None, report=None,
                      progress: bool = False) -> dict:
    """Load -> revive -> write the revived checkpoint (input's format) and its JSON report.

    Streams layer by layer: each target layer is read, revived, patched into the output and
    dropped before the next, so memory holds about one layer (plus its side information).
    `config` is a `revival.attack.AttackConfig` (None: its defaults). Returns the report dict.
    RevivalError for bad input (nothing pruned, NaN/inf, output == input, ...), before writing.
    """
    from ..io import CheckpointWriter, TensorStore, check_output_path, load_checkpoint, write_report
    from ..layers import DEFAULT_LAYERS, check_finite, select_layers
    from ..masks import MaskReport, mask_stats

    try:
        from ..attack.revive import AttackConfig, LayerResult, revive
    except ImportError as exc:  # pragma: no cover - only while the attack is being built
        raise RevivalError(f"the attack module is not available ({exc}).") from None
    t0 = time.perf_counter()
    ckpt = load_checkpoint(path)
    output = check_output_path(output, ckpt.input_paths())
    report_path = Path(report) if report is not None else default_report_path(output, ckpt.format)
    _check_report(report_path, output, ckpt.input_paths())
    names = select_layers(ckpt.tensors, layers or DEFAULT_LAYERS)
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
    with CheckpointWriter(ckpt, output) as writer:
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
        "layer_pattern": layers or DEFAULT_LAYERS, "mask": masks.to_dict(), "attack": result.to_dict(),
        "seconds": {"load_and_check": round(t1 - t0, 4), "attack": round(seconds_attack, 4),
                    "write": round(t_write, 4), "total": round(t3 - t0, 4)},
    }
    data["report"] = str(write_report(report_path, data, ckpt.input_paths()))
    return data


# --------------------------------------------------------------------------- verbs

def _inspect(args) -> int:
    from ..masks import MaskReport, MaskStats

    info = inspect_checkpoint(args.checkpoint, args.layers)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint  {info['path']}")
    print(f"format      {info['format']} ({info['naming']} naming)")
    print(f"tensors     {info['tensors']} ({info['parameters']:,} parameters)")
    print("dtypes      " + ", ".join(f"{k} x{v}" for k, v in info["dtypes"].items()))
    if info["metadata"]:
        print("metadata    " + ", ".join(f"{k}={v}" for k, v in info["metadata"].items()))
    print(f"layers      {len(info['layers'])} matching {info['layer_pattern']!r}\n")
    stats = MaskReport(tuple(MaskStats(**{**s, "shape": tuple(s["shape"])}) for s in info["pruned"]["layers"]))
    print(stats.table())
    print(f"\nverdict     {info['verdict']}")
    return 0


def _attack(args) -> int:
    try:
        from ..attack.revive import AttackConfig
    except ImportError as exc:  # pragma: no cover
        raise RevivalError(f"the attack module is not available ({exc}).") from None
    opts = {"solver": args.solver, "rank": args.rank, "lam": args.lam, "keep": args.keep,
            "magnitude": args.magnitude, "seed": args.seed, "device": args.device, "max_iters": args.max_iters,
            "side": False if args.no_side else None}
    config = AttackConfig(**{k: v for k, v in opts.items() if v is not None})
    if args.attacker != "zeros":
        from ..attack.attackers import attack_release

        data = attack_release(args.checkpoint, args.output, args.attacker, config, layers=args.layers,
                              report=args.report, model=args.model, concept=args.concept,
                              fraction=args.fraction, original=args.original, progress=not args.quiet)
        if not args.quiet:
            r = data["attacker"]
            print(f"{args.attacker}: located {r['located']}, revived {r['revived']} weights in {r['layers']} layers "
                  f"({data['seconds']['total']:.1f} s) -> {data['output']}")
            if r.get("localisation"):
                loc = r["localisation"]
                print(f"localisation: entry AUC {loc['entry_auc']:.3f}, column AUC {loc['column_auc']:.3f}, "
                      f"precision@k {loc['precision_at_k']:.3f} (base rate {loc['base_rate']:.3f})")
            print(f"report -> {data['report']}")
        return 0
    data = attack_checkpoint(args.checkpoint, args.output, config, layers=args.layers, report=args.report,
                             progress=not args.quiet)
    if not args.quiet:
        t, m = data["attack"]["totals"], data["mask"]["totals"]
        print(f"revived {t.get('kept', '?')} of {m['pruned']} pruned weights in {t.get('layers', '?')} layers "
              f"({data['seconds']['total']:.1f} s) -> {data['output']}")
        print(f"report -> {data['report']}")
    return 0


def _defend(args) -> int:
    from ..io import check_output_path, load_checkpoint, write_report
    from ..defense.obfuscate import defend

    # refuse bad output/report paths before the work
    ckpt = load_checkpoint(args.checkpoint)
    output = check_output_path(args.output, ckpt.input_paths())
    report = args.report if args.report is not None else default_report_path(output, ckpt.format)
    _check_report(report, output, ckpt.input_paths())
    t0 = time.perf_counter()
    written, result, masks = defend(args.checkpoint, output, layers=args.layers, stats=args.stats,
                                    seed=args.seed, progress=not args.quiet, method=args.method, scale=args.scale,
                                    column_share=args.column_share, fresh_units=args.fresh_units, hot=args.hot)
    data = {"input": str(ckpt.path), "output": str(written), "format": ckpt.format, "naming": ckpt.naming,
            "mask": masks.to_dict(), "obfuscate": result.to_dict(),
            "seconds": round(time.perf_counter() - t0, 4)}
    write_report(report, data, ckpt.input_paths())
    if not args.quiet:
        print(f"filled {result.pruned} pruned positions in {sum(l.pruned > 0 for l in result.layers)} layers "
              f"({result.to_dict()['method']}, N(mean, std) of each {args.stats}, seed {args.seed}) -> {written}")
        if result.metadata_removed:
            print("removed metadata: " + ", ".join(result.metadata_removed))
        print(f"report -> {report}")
    return 0


def _score(args) -> int:
    from ..io import write_report
    from ..metrics import score_checkpoints

    inputs = [args.original, args.pruned, args.revived]
    if args.report is not None:
        from ..io import check_output_path

        check_output_path(args.report, inputs)
    result = score_checkpoints(args.original, args.pruned, args.revived, args.layers)
    data = result.to_dict()
    if args.report is not None:
        write_report(args.report, data, inputs)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(result.table())
        o = result.total
        if o.unpruned_changed:
            print(f"\nwarning: {o.unpruned_changed} unpruned entries differ between the pruned and revived "
                  "checkpoints.", file=sys.stderr)
    return 0
