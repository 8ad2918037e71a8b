"""Pruning-based unlearning methods (the defence the revival attack defeats)."""
from .conceptprune import (
    PRESETS,
    ConceptPruneConfig,
    ConceptPruneResult,
    apply_masks,
    artist_prompts,
    collect_activations,
    concept_prompts,
    conceptprune,
    conceptprune_masks,
    load_masks,
    nudity_prompts,
    object_prompts,
    save_masks,
)

__all__ = [
    "PRESETS", "ConceptPruneConfig", "ConceptPruneResult", "apply_masks", "artist_prompts",
    "collect_activations", "concept_prompts", "conceptprune", "conceptprune_masks", "load_masks",
    "nudity_prompts", "object_prompts", "save_masks",
]
