"""Defenses of a pruned release: one a file, selectable by name (`revival defend --method NAME`).

    gaussian     fill the pruned positions with N(mean, std) of the row / layer (the paper's; obfuscate.py)
    decoy        fill, then zero as many decoy positions, clustered like ConceptPrune's (decoy.py)
    resample     fill, and retire the hidden units where pruning concentrated (resample.py; the default)

Each registers by a decorator in its own file (`DEFENSE_METHODS`, base.py; its rank orders them,
the default first): `fn(tensors, layers, seed=None, scale=..., progress=...) -> (updates, result)`: updates hold
the changed layers (dtype and shape kept), result has `to_dict()` and `pruned` (positions filled).
What they share (argument checks, the secret randomness, the Gaussian fill) is in base.py.

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

__all__ = ["DEFENSES", "DEFAULT_DEFENSE", "DEFENSE_METHODS", "SEED_WARNING", "apply_defense", "get_defense"]


def get_defense(name: str):
    """The defense function named `name` (one sentence for an unknown one)."""
    return DEFENSE_METHODS.get(name)


def apply_defense(tensors, layers, method: str = DEFAULT_DEFENSE, seed: int | None = None, *, scale: float = 1.0,
                  stats: str = "row", column_share: float | None = None, fresh_units: bool = False,
                  hot: str | None = None, retire: bool | None = None, progress: bool = False):
    """Run defense `method` on the pruned (exactly zero) positions of `layers` -> (updates, result).
    seed None (the default): secret OS entropy; an integer: reproducible bytes (`SEED_WARNING`).
    stats: row | layer noise statistics; column_share, hot, fresh_units, retire: resample's options (None: its
    defaults)."""
    import inspect

    check_seed(seed)
    fn = get_defense(method)
    kwargs = {"scale": scale, "progress": progress, "stats": stats}
    # a defense's own options: those its registered function takes; another defense's option,
    # given, is refused in one sentence rather than silently ignored
    options = {"column_share": column_share, "fresh_units": fresh_units, "hot": hot, "retire": retire}
    takes = inspect.signature(fn).parameters
    refused = [k for k, v in options.items() if v != _OPTION_DEFAULTS[k] and k not in takes]
    if refused:
        owners = [n for n in DEFENSE_METHODS.names() if refused[0] in inspect.signature(get_defense(n)).parameters]
        raise RevivalError(f"the {method} defense takes no --{refused[0].replace('_', '-')} option "
                           f"(an option of {', '.join(owners) or 'no defense'}).")
    kwargs.update({k: v for k, v in options.items() if k in takes})
    return fn(tensors, layers, seed, **kwargs)


_OPTION_DEFAULTS = {"column_share": None, "fresh_units": False, "hot": None, "retire": None}
