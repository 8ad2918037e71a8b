"""CLI verb `experiment`: concepts x stages -> the paper's table, resumable (revival.story.experiment)."""
from __future__ import annotations

from pathlib import Path

from revival.cli import options as O


def register(sub) -> None:
    p = O.verb(sub, "experiment", "concepts x stages -> the paper's table, as one resumable run",
               "Run every (concept, stage) cell of a TOML config -- original, unlearned, revived, obfuscated, "
               "obfuscated + attack -- and write OUT/results.{json,md,csv,png} and OUT/manifest.json. Finished "
               "cells are never recomputed; a stopped run resumes (OUT new, or an earlier run of the same config). "
               "CONFIG 'testbed' is the shipped 10-concept testbed config.", O.OUT, O.DEVICE, O.DTYPE)
    p.add_argument("config", nargs="?", default=None, help="TOML config, or 'testbed' (the shipped one)")
    p.add_argument("--reproduce", type=Path, default=None, metavar="MANIFEST",
                   help="run again the experiment a manifest.json records (model files must match)")
    p.set_defaults(func=_experiment)


def _experiment(args) -> int:
    from revival.runtime.distributed import is_main
    from revival.errors import RevivalError
    from revival.story.experiment import load_config, markdown, reproduce, run_experiment

    if (args.config is None) == (args.reproduce is None):
        raise RevivalError("give a CONFIG or --reproduce MANIFEST (one of them).")
    config = None if args.config in (None, "testbed") else args.config
    O.plan({"the output": args.out}, [config, args.reproduce], overwrite=True, folders={"the output": True})
    kwargs = dict(device=args.device, dtype=args.dtype, progress=not args.quiet)
    if args.reproduce is not None:
        result = reproduce(args.reproduce, args.out, **kwargs)
    else:
        result = run_experiment(load_config(args.config), args.out, **kwargs)
    if is_main():
        if not args.quiet:
            print(markdown(result))
        print(f"{len(result.computed)} of {len(result.cells)} cells computed in this run; "
              f"results: {args.out / 'results.md'} (.json, .csv, .png), manifest: {args.out / 'manifest.json'}")
    return 0
