"""Pruning-based unlearning methods (the defence the revival attack defeats)."""
from .conceptprune import (
    PRESETS,
    ConceptPruneConfig,
    ConceptPruneResult,
    apply_masks,
    collect_activations,
    conceptprune,
    conceptprune_masks,
    load_masks,
    save_masks,
    concept_prompts,
)

__all__ = [
    "PRESETS", "ConceptPruneConfig", "ConceptPruneResult", "apply_masks", "collect_activations",
    "conceptprune", "conceptprune_masks", "load_masks", "save_masks", "concept_prompts",
]
