"""The revival attack: matrix completion -> Top-K sign retention -> magnitude rule.

One idea a file: `completion` (solvers: the fast default `regress`, the paper's `svt`,
`softimpute`), `signs` (Top-K Sign Retention), `magnitudes` (Neuron-Max and the other rules),
`revive` (the attack over a state dict, its config and typed result). The attackers that
locate hidden positions, the ladder that runs them and the relearning attacker are `attackers/`.
"""
from revival.attack.completion import DEFAULT_SOLVER, SOLVERS, Completion, complete, holdout_mask
from revival.attack.magnitudes import MAGNITUDES, get_magnitude
from revival.attack.revive import AttackConfig, AttackResult, LayerResult, revive, revive_matrix, side_features
from revival.attack.signs import top_k_signs

__all__ = [
    "AttackConfig", "AttackResult", "Completion", "DEFAULT_SOLVER", "LayerResult", "MAGNITUDES",
    "SOLVERS", "complete", "get_magnitude", "holdout_mask", "revive",
    "revive_matrix", "side_features", "top_k_signs",
]
