"""CLI verbs on checkpoints: `inspect`, `attack`, `defend`, `score`.

Thin: parse, check every output path, call the API (checkpoint, masks, attack, defense, metrics),
print, write the JSON report. Every bad input surfaces as a RevivalError (one sentence;
`revival.cli.main` prints it and exits 2) before any work and before any file is written.

Reports: `attack` and `defend` write a JSON report beside the output (`OUT.report.json`, for a
file and a folder alike: the folder holds the model's files only; `--report PATH` chooses
another). `inspect --json` and `score --json` print JSON to stdout instead of a table;
`score --report PATH` also writes it to a file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from revival.cli import options as O


def register(sub) -> None:
    from revival.attack.attackers import LOCATORS

    p = O.verb(sub, "inspect", "format, dtype, target layers and pruned positions of a checkpoint",
               "Describe a UNet checkpoint (diffusers folder, .safetensors, .ckpt/.pt): format, naming, dtypes, the "
               "target layers and their pruned (exactly zero) positions with their row/column clustering.",
               O.CHECKPOINT, O.LAYERS)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_inspect)

    a = O.verb(sub, "attack", "revive the pruned weights of an unlearned checkpoint",
               "The revival attack: pruned positions (exact zeros) -> matrix completion -> Top-K sign retention -> "
               "magnitude rule. Writes the revived checkpoint in the input's format and a JSON report beside it.",
               O.CHECKPOINT, O.OUT, O.REPORT, O.OVERWRITE, O.ATTACK, O.SEED, O.DEVICE, O.LAYERS, O.ORIGINAL,
               O.MODEL, O.CONCEPT_OPTIONAL)
    a.add_argument("--rank", type=int, default=None, help="rank cap of rank-restricted solvers")
    a.add_argument("--lambda", dest="lam", type=float, default=None,
                   help="regularization: regress = damping of the low-rank basis (default 3); softimpute = soft "
                        "threshold")
    a.add_argument("--no-side", action="store_true",
                   help="do not use the intact ff.net.0.proj rows as side information")
    a.add_argument("--max-iters", type=int, default=None, help="solver iteration cap (default: the solver's)")
    a.add_argument("--attacker", default="zeros",
                   help="how the pruned positions are found (default zeros; method-aware needs --model and "
                        "--concept): " + LOCATORS.help())
    a.add_argument("--fraction", type=float, default=None,
                   help="residual/columns/reprune: share of each matrix's entries to locate")
    a.set_defaults(func=_attack)

    d = O.verb(sub, "defend", "hide the pruned positions of a release (default: resample)",
               "Defend a pruned release (revival.defense): resample (default) fills every pruned position with "
               "Gaussian noise of the surviving weights of the same row (or layer) and replaces whole the hidden "
               "units where pruning concentrated; gaussian fills only the pruned positions; decoy fills them and "
               "zeroes as many decoys. Strips metadata that tells of pruning; writes the checkpoint in the input's "
               "format and its report beside it (never inside the folder you publish). The noise is secret "
               "randomness from the OS unless --seed is given (research runs only).",
               O.CHECKPOINT, O.OUT, O.REPORT, O.OVERWRITE, O.SEED, O.LAYERS)
    from revival.defense import DEFENSE_METHODS

    d.add_argument("--method", default=None, help=f"the defense: {DEFENSE_METHODS.help()}")
    d.add_argument("--stats", choices=("row", "layer"), default="row",
                   help="noise statistics from the same row (default) or the whole layer")
    d.add_argument("--scale", type=float, default=1.0, help="noise scale: multiplies the noise's std (default 1)")
    d.add_argument("--column-share", type=float, default=None,
                   help="resample: replace the hidden units with at least this share of rows pruned (default 0.2)")
    d.add_argument("--hot", choices=("column", "row"), default=None,
                   help="resample: noise scale of those units: their own surviving weights' (column, default) or "
                        "the rows'")
    d.add_argument("--fresh-units", action="store_true",
                   help="resample: also redraw those units' ff.net.0.proj rows (costlier)")
    d.add_argument("--retire", action=argparse.BooleanOptionalAction, default=None,
                   help="resample: retire those units (redraw their ff.net.0.proj rows and close their GEGLU gate, "
                        "so they write nothing)")
    d.set_defaults(func=_defend)

    s = O.verb(sub, "score", "sign recovery of a revived checkpoint against the original",
               "Per layer and overall: pruned count, kept fraction, sign accuracy on kept and on all pruned "
               "positions, relative error and cosine of (R-P) vs (O-P) on the pruned positions, and the number of "
               "unpruned entries the revival changed.",
               O.ORIGINAL, O.REPORT, O.OVERWRITE, O.LAYERS)
    s.add_argument("--pruned", required=True, help="the pruned (unlearned) checkpoint")
    s.add_argument("--revived", required=True, help="the revived checkpoint")
    s.add_argument("--json", action="store_true", help="print JSON to stdout instead of the table")
    s.set_defaults(func=_score)


def _outputs(args, inputs) -> Path:
    """Check the checkpoint output and its report before any work; returns the report path."""
    from revival.io.outputs import default_report_path

    report = args.report if args.report is not None else default_report_path(args.out)
    O.plan({"the output": args.out, "the report": report}, inputs, overwrite=args.overwrite,
           folders={"the output": O.checkpoint_output(args.out, inputs[0]), "the report": False})
    return report


# --------------------------------------------------------------------------- verbs

def _inspect(args) -> int:
    from revival.release.masks import MaskReport, MaskStats

    from revival.release.inspect import inspect_checkpoint

    info = inspect_checkpoint(O.checkpoint_path(args.checkpoint), args.layers)
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
    if info.get("found"):
        from revival.release.masks import PrunedLayer, ZeroPattern, pruned_layers_table

        found = [PrunedLayer(**{**d, "shape": tuple(d["shape"]), "pattern": ZeroPattern(**d["pattern"])})
                 for d in info["found"]["layers"]]
        print()
        print(pruned_layers_table(found))
        print(f"\nlooks like  {info['found']['method']}")
    print(f"\nverdict     {info['verdict']}")
    return 0


def _attack(args) -> int:
    from revival.attack.revive import AttackConfig, revive_checkpoint

    source, original = O.checkpoint_path(args.checkpoint), O.checkpoint_path(args.original)
    report = _outputs(args, [source, original])
    opts = {"solver": args.solver, "rank": args.rank, "lam": args.lam, "keep": args.keep,
            "magnitude": args.magnitude, "seed": args.seed, "device": args.device, "max_iters": args.max_iters,
            "side": False if args.no_side else None}
    config = AttackConfig(**{k: v for k, v in opts.items() if v is not None})
    if args.attacker != "zeros":
        from revival.attack.attackers import attack_release

        data = attack_release(source, args.out, args.attacker, config, layers=args.layers, report=report,
                              model=args.model, concept=args.concept, fraction=args.fraction, original=original,
                              overwrite=args.overwrite, progress=not args.quiet)
        r = data["attacker"]
        print(f"{args.attacker}: located {r['located']}, revived {r['revived']} weights in {r['layers']} layers "
              f"({data['seconds']['total']:.1f} s) -> {data['output']} (report {data['report']})")
        if r.get("localisation") and not args.quiet:
            loc = r["localisation"]
            print(f"localisation: entry AUC {loc['entry_auc']:.3f}, column AUC {loc['column_auc']:.3f}, "
                  f"precision@k {loc['precision_at_k']:.3f} (base rate {loc['base_rate']:.3f})")
        return 0
    if original is not None:
        from revival.errors import RevivalError

        raise RevivalError("--original scores the localisation of an --attacker other than zeros; for the zeros "
                           "attack, score the revived checkpoint with `revival score --original ...`.")
    data = revive_checkpoint(source, args.out, config, layers=args.layers, report=report,
                             overwrite=args.overwrite, progress=not args.quiet)
    t, m = data["attack"]["totals"], data["mask"]["totals"]
    print(f"revived {t.get('kept', '?')} of {m['pruned']} pruned weights in {t.get('layers', '?')} layers "
          f"({data['seconds']['total']:.1f} s) -> {data['output']} (report {data['report']})")
    rows = [l["whole_rows"] for l in data["attack"]["layers"] if l.get("whole_rows")]
    lost = sum(r["rows"] - r["estimated"] for r in rows)
    if lost and not args.quiet:
        print(f"{lost} whole missing rows in {sum(r['rows'] > r['estimated'] for r in rows)} layers are not "
              "recoverable from their matrices (see each layer's whole_rows in the report)")
    return 0


def _defend(args) -> int:
    from revival.defense.obfuscate import defend

    source = O.checkpoint_path(args.checkpoint)
    report = _outputs(args, [source])
    if args.seed is not None:
        print(f"revival: warning: {_seed_warning()}", file=sys.stderr)
    seed = {} if args.seed is None else {"seed": args.seed}
    from revival.defense import defense_options

    options = {k: getattr(args, k) for k in defense_options()}   # each defense's own options, by their names
    written, result, _ = defend(source, args.out, layers=args.layers, stats=args.stats, report=report,
                                overwrite=args.overwrite, progress=not args.quiet, method=args.method,
                                scale=args.scale, **options, **seed)
    randomness = "secret seed" if args.seed is None else f"seed {args.seed}"
    print(f"filled {result.pruned} pruned positions in {sum(l.pruned > 0 for l in result.layers)} layers "
          f"({result.to_dict()['method']}, N(mean, std) of each {args.stats}, {randomness}) -> {written} "
          f"(report {result.report})")
    if result.metadata_removed and not args.quiet:
        print("removed metadata: " + ", ".join(result.metadata_removed))
    return 0


def _seed_warning() -> str:
    try:
        from revival.defense import SEED_WARNING
    except ImportError:
        try:
            from revival.defense.base import SEED_WARNING
        except ImportError:
            SEED_WARNING = ("a known seed makes the defense's fills reproducible by anyone who knows it; leave --seed "
                            "out for a release.")
    return SEED_WARNING


def _score(args) -> int:
    from revival.errors import RevivalError
    from revival.io import write_report
    from revival.attack.recovery import score_checkpoints

    if args.original is None:
        raise RevivalError("score needs --original (the checkpoint before pruning; 'testbed' for the testbed's).")
    inputs = [O.checkpoint_path(args.original), O.checkpoint_path(args.pruned), O.checkpoint_path(args.revived)]
    if args.report is not None:
        O.plan({"the report": args.report}, inputs, overwrite=args.overwrite, folders={"the report": False})
    result = score_checkpoints(*inputs, args.layers)
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
