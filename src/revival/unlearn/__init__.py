"""Unlearning methods: pruning (ConceptPrune, CAD-like, neurons; the defence the revival attack
defeats) and the fine-tuning erasures (`ERASURES`: anchor, esd, robust), registered by importing
their files here. ConceptPrune's names load on first use (its module brings diffusers in), so the
CLI reads the erasures' names and help from the registry without it; import them from
`revival.unlearn.conceptprune`.
"""
from revival.unlearn import anchor, esd, robust  # noqa: F401  (each registers itself in ERASURES)
from revival.unlearn.erasures import ERASURES, ErasureConfig, ErasureData, erasure_config, sd_data, testbed_data

_CONCEPTPRUNE = (
    "PRESETS", "ConceptPruneConfig", "ConceptPruneResult", "apply_masks", "artist_prompts",
    "collect_activations", "concept_prompts", "conceptprune_masks", "load_masks",
    "nudity_prompts", "object_prompts", "save_masks",
)


def __getattr__(name: str):
    if name in _CONCEPTPRUNE:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.conceptprune"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_CONCEPTPRUNE, "ERASURES", "ErasureConfig", "ErasureData", "erasure_config", "sd_data", "testbed_data"]
