"""`revival <verb>`: a thin shell over the public API.

Each verb group lives in its own module with a `register(subparsers)` function that adds
its parsers and sets `func` (called with the parsed namespace; returns an exit code).
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import RevivalError


def build_parser() -> argparse.ArgumentParser:
    from . import audit, core, demo, testbed

    parser = argparse.ArgumentParser(
        prog="revival",
        description="Revive concepts erased from diffusion models by pruning, and defend against it.",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: REVIVAL_THREADS or 1; see README)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (core, testbed, demo, audit):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .._threads import set_threads

    set_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except RevivalError as exc:
        print(f"revival: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("revival: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `revival score --json | head`: the reader went away; that is not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
