"""`revival <verb>`: a thin shell over the public API.

Each verb group lives in its own module with a `register(subparsers)` function that adds
its parsers and sets `func` (called with the parsed namespace; returns an exit code).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import RevivalError


def build_parser() -> argparse.ArgumentParser:
    from . import audit, core, demo, evaluate, experiment, testbed, unlearn

    parser = argparse.ArgumentParser(
        prog="revival",
        description="Revive concepts erased from diffusion models by pruning, and defend against it.",
    )
    parser.add_argument("--threads", type=_int, default=None,
                        help="torch CPU threads (default: REVIVAL_THREADS, else torch's own choice; "
                             "pin 1 on a busy shared machine, see README)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (core, unlearn, evaluate, testbed, demo, experiment, audit):
        module.register(sub)
    return parser


def _int(text: str):
    """argparse type: an int, or the text itself so that the API's check words the error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


class Terminated(BaseException):
    """SIGTERM (timeout, schedulers, preemption), raised in the main thread like Ctrl-C's
    KeyboardInterrupt, so every writer's clean-up runs and no partial output is left."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .._threads import set_threads

    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        set_threads(args.threads)
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
