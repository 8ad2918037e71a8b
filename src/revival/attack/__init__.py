"""The revival attack: matrix completion -> Top-K sign retention -> magnitude rule."""
from .completion import SOLVERS, Completion, complete
from .magnitudes import MAGNITUDES, get_magnitude
from .revive import AttackConfig, AttackResult, LayerResult, revive, revive_matrix
from .signs import top_k_signs

__all__ = [
    "AttackConfig", "AttackResult", "LayerResult", "Completion", "MAGNITUDES", "SOLVERS",
    "complete", "get_magnitude", "revive", "revive_matrix", "top_k_signs",
]
