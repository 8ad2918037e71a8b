"""Defenses of a pruned release: one a file, selectable by name (`revival defend --method NAME`).

    gaussian     fill the pruned positions with N(mean, std) of the row / layer (the paper's; obfuscate.py)
    decoy        fill, then zero as many decoy positions, clustered like ConceptPrune's (decoy.py)
    resample     fill, and retire the hidden units where pruning concentrated (resample.py; the default)

Each registers by a decorator in its own file (`DEFENSE_METHODS`, base.py; its rank orders them,
the default first): `fn(tensors, layers, seed=None, *, scale, stats, progress, **its own options)
-> (updates, result)`: updates hold the changed layers (dtype and shape kept), result has
`to_dict()` and `pruned` (positions filled). A defense's own options are its keyword-only
parameters (`defense_options()` reads them; `check_options` refuses another defense's); a defense
that reads tensors beside the layers names them as `fn.reads(layers)` (resample: the blocks'
unit tensors). What they share (argument checks, the secret randomness, the Gaussian fill) is in base.py.

Randomness is secret by default: seed None draws the run's noise from the operating system's
entropy (two runs differ; the report records `seed: null`). An explicit seed is for research runs:
`SEED_WARNING` says why a release must not use one.
"""
from __future__ import annotations

from revival.defense.base import DEFENSE_METHODS, SEED_WARNING, check_seed
from revival.errors import RevivalError
from revival.defense import resample as _resample, obfuscate as _obfuscate, decoy as _decoy  # noqa: E402,F401 (they register)

DEFENSES = DEFENSE_METHODS.names()
DEFAULT_DEFENSE = DEFENSES[0]

__all__ = ["DEFENSES", "DEFAULT_DEFENSE", "DEFENSE_METHODS", "SEED_WARNING", "apply_defense", "check_options",
           "defense_options", "defense_reads", "get_defense"]


def get_defense(name: str):
    """The defense function named `name` (one sentence for an unknown one)."""
    return DEFENSE_METHODS.get(name)


# the options every defense takes (the common signature); the rest are each defense's own
COMMON = ("tensors", "layers", "seed", "scale", "stats", "progress")


def defense_options() -> dict[str, object]:
    """{option: its default} over every registered defense's own keyword options (beyond
    `COMMON`), read from the registered functions' signatures: a defense that adds an option adds
    it in its own file, nowhere else."""
    import inspect

    out: dict[str, object] = {}
    for name in DEFENSE_METHODS.names():
        for key, p in inspect.signature(get_defense(name)).parameters.items():
            if key not in COMMON and p.kind is p.KEYWORD_ONLY:
                out.setdefault(key, p.default)
    return out


def check_options(method: str, options) -> dict:
    """The options defense `method` takes, from `options` ({name: value}): an option no defense
    knows, or another defense's option given a value other than its default, is refused in one
    sentence rather than silently ignored."""
    import inspect

    known = defense_options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RevivalError(f"no defense takes an option {unknown[0]!r} (defense options: {', '.join(sorted(known))}).")
    takes = inspect.signature(get_defense(method)).parameters
    refused = [k for k, v in options.items() if k not in takes and v != known[k]]
    if refused:
        owners = [n for n in DEFENSE_METHODS.names() if refused[0] in inspect.signature(get_defense(n)).parameters]
        raise RevivalError(f"the {method} defense takes no --{refused[0].replace('_', '-')} option "
                           f"(an option of {', '.join(owners)}).")
    return {k: v for k, v in options.items() if k in takes}


def defense_reads(method: str, tensors, layers) -> list[str] | None:
    """The names of the other tensors defense `method` reads beside `layers` (those of `tensors`
    that exist), declared by the defense as `fn.reads(layers)`, which may refuse layers it cannot
    treat in one sentence; None: the defense declares none (it may read any tensor)."""
    reads = getattr(get_defense(method), "reads", None)
    return None if reads is None else [k for k in reads(list(layers)) if k in tensors]


def apply_defense(tensors, layers, method: str = DEFAULT_DEFENSE, seed: int | None = None, *, scale: float = 1.0,
                  stats: str = "row", progress: bool = False, **options):
    """Run defense `method` on the pruned (exactly zero) positions of `layers` -> (updates, result).
    seed None (the default): secret OS entropy; an integer: reproducible bytes (`SEED_WARNING`).
    stats: row | layer noise statistics; `options`: a defense's own (`defense_options()`; resample's
    column_share, hot, fresh_units, retire), refused by `check_options` when the method takes
    none such."""
    check_seed(seed)
    fn = get_defense(method)
    kwargs = check_options(method, options)
    return fn(tensors, layers, seed, scale=scale, progress=progress, stats=stats, **kwargs)
