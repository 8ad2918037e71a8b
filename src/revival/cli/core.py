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

import argparse
import json
import sys
from pathlib import Path


_LAYERS_HELP = ("regex (re.search) choosing the target layers by name, diffusers or the file's own "
                "naming (default: every transformer block's ff.net.2.weight)")


_FOUND_HELP = ("regex (re.search) choosing the target layers by name, diffusers or the file's own "
               "naming (default: every 2-D weight holding more exact zeros than chance explains "
               "for its dtype and size)")


def register(sub) -> None:
    p = sub.add_parser("inspect", help="format, dtype, target layers and pruned positions of a checkpoint",
                       description="Describe a UNet checkpoint (diffusers folder, .safetensors, .ckpt/.pt): "
                                   "format, naming, dtypes, the target layers and their pruned (exactly zero) "
                                   "positions with their row/column clustering.")
    p.add_argument("checkpoint", type=Path, help="UNet checkpoint: diffusers folder, .safetensors or .ckpt/.pt")
    p.add_argument("--layers", default=None, help=_FOUND_HELP)
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
    a.add_argument("--layers", default=None, help=_FOUND_HELP)
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
    a.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only the files this command writes; others are kept)")
    a.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    a.set_defaults(func=_attack)

    d = sub.add_parser("defend", help="hide the pruned positions of a release (default: resample)",
                       description="Defend a pruned release (revival.defense): resample (default) fills every pruned "
                                   "position with Gaussian noise of the surviving weights of the same row (or layer) "
                                   "and replaces whole the hidden units where pruning concentrated; gaussian fills "
                                   "only the pruned positions; decoy fills them and zeroes as many decoys. Strips "
                                   "metadata that tells of pruning; writes the checkpoint in the input's format.")
    d.add_argument("checkpoint", type=Path, help="the pruned (unlearned) UNet checkpoint")
    d.add_argument("-o", "--output", type=Path, required=True, help="where to write the obfuscated checkpoint")
    d.add_argument("--stats", choices=("row", "layer"), default="row",
                   help="noise statistics from the same row (default) or the whole layer")
    d.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    d.add_argument("--method", default=None, help="resample (default), gaussian or decoy")
    d.add_argument("--scale", type=float, default=1.0, help="noise scale: multiplies the noise's std (default 1)")
    d.add_argument("--column-share", type=float, default=None,
                   help="resample: replace the hidden units with at least this share of rows pruned (default 0.2)")
    d.add_argument("--hot", choices=("column", "row"), default=None,
                   help="resample: noise scale of those units: their own surviving weights' (column, default) or the rows'")
    d.add_argument("--fresh-units", action="store_true",
                   help="resample: also redraw those units' ff.net.0.proj rows (costlier; see README)")
    d.add_argument("--retire", action=argparse.BooleanOptionalAction, default=None,
                   help="resample: retire those units (redraw their ff.net.0.proj rows and close their GEGLU "
                        "gate, so they write nothing); see README for the measured default")
    d.add_argument("--layers", default=None, help=_LAYERS_HELP)
    d.add_argument("--report", type=Path, default=None,
                   help="JSON report path (default: OUTPUT.report.json, or OUTPUT/revival_report.json for a folder)")
    d.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only the files this command writes; others are kept)")
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


# --------------------------------------------------------------------------- verbs

def _inspect(args) -> int:
    from ..masks import MaskReport, MaskStats

    from ..inspect import inspect_checkpoint

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
    if info.get("found"):
        from ..masks import PrunedLayer, ZeroPattern, pruned_layers_table

        found = [PrunedLayer(**{**d, "shape": tuple(d["shape"]), "pattern": ZeroPattern(**d["pattern"])})
                 for d in info["found"]["layers"]]
        print()
        print(pruned_layers_table(found))
        print(f"\nlooks like  {info['found']['method']}")
    print(f"\nverdict     {info['verdict']}")
    return 0


def _attack(args) -> int:
    from ..attack.revive import AttackConfig, revive_checkpoint

    opts = {"solver": args.solver, "rank": args.rank, "lam": args.lam, "keep": args.keep,
            "magnitude": args.magnitude, "seed": args.seed, "device": args.device, "max_iters": args.max_iters,
            "side": False if args.no_side else None}
    config = AttackConfig(**{k: v for k, v in opts.items() if v is not None})
    if args.attacker != "zeros":
        from ..attack.attackers import attack_release

        data = attack_release(args.checkpoint, args.output, args.attacker, config, layers=args.layers,
                              report=args.report, model=args.model, concept=args.concept,
                              fraction=args.fraction, original=args.original, overwrite=args.overwrite,
                              progress=not args.quiet)
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
    data = revive_checkpoint(args.checkpoint, args.output, config, layers=args.layers, report=args.report,
                             overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        t, m = data["attack"]["totals"], data["mask"]["totals"]
        print(f"revived {t.get('kept', '?')} of {m['pruned']} pruned weights in {t.get('layers', '?')} layers "
              f"({data['seconds']['total']:.1f} s) -> {data['output']}")
        rows = [l["whole_rows"] for l in data["attack"]["layers"] if l.get("whole_rows")]
        lost = sum(r["rows"] - r["estimated"] for r in rows)
        if lost:
            print(f"{lost} whole missing rows in {sum(r['rows'] > r['estimated'] for r in rows)} layers are not "
                  "recoverable from their matrices (see each layer's whole_rows in the report)")
        print(f"report -> {data['report']}")
    return 0


def _defend(args) -> int:
    from ..defense.obfuscate import defend

    written, result, _ = defend(args.checkpoint, args.output, layers=args.layers, stats=args.stats, seed=args.seed,
                                report=args.report, overwrite=args.overwrite, progress=not args.quiet,
                                method=args.method, scale=args.scale, column_share=args.column_share,
                                fresh_units=args.fresh_units, hot=args.hot, retire=args.retire)
    if not args.quiet:
        print(f"filled {result.pruned} pruned positions in {sum(l.pruned > 0 for l in result.layers)} layers "
              f"({result.to_dict()['method']}, N(mean, std) of each {args.stats}, seed {args.seed}) -> {written}")
        if result.metadata_removed:
            print("removed metadata: " + ", ".join(result.metadata_removed))
        print(f"report -> {result.report}")
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
