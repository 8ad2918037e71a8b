"""`revival <verb>`: a thin shell over the public API.

Each verb group lives in its own module with a `register(subparsers)` function that adds
its parsers and sets `func` (called with the parsed namespace; returns an exit code). Every
option shared by several verbs is defined once in `options` (parent parsers); the global ones
(--threads, --quiet) go before or after the verb.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from revival.errors import RevivalError
from revival.cli.options import Parser, global_options


def build_parser() -> argparse.ArgumentParser:
    from revival.cli import audit, core, demo, evaluate, experiment, relearn, testbed, unlearn

    parser = global_options(Parser(
        prog="revival",
        description="Revive concepts erased from diffusion models by pruning, and defend against it.",
    ), after_verb=False)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (core, unlearn, evaluate, testbed, demo, experiment, audit, relearn):
        module.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM (timeout, schedulers, preemption), raised in the main thread like Ctrl-C's
    KeyboardInterrupt, so every writer's clean-up runs and no partial output is left."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run `revival ARGV`; returns the exit status (0 done; 2 bad input, one sentence on stderr;
    audit: 3 fail, 4 inconclusive; 130 Ctrl-C; 143 SIGTERM)."""
    import threading

    from revival.runtime.threads import set_threads
    from revival.cli.quiet import quiet

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version: argparse printed what was asked
            return int(exc.code or 0)
        set_threads(args.threads)
        with quiet(args.quiet):
            return int(args.func(args) or 0)
    except RevivalError as exc:
        print(f"revival: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("revival: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
    except Terminated:
        print("revival: terminated (SIGTERM); nothing partial was left behind", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # `revival score --json | head`: the reader went away; that is not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
