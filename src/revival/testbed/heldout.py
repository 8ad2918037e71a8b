"""Held-out evaluation prompts for the testbed: prompts and seeds that unlearning never sees.

ConceptPrune's testbed prompts name each class by its own name in six templates
(`revival.unlearn.conceptprune.TESTBED_TEMPLATES`: "a photo of a sneaker", ...), with seeds from
0. Evaluation must not rest on those inputs, so the held-out set names each class by its other
synonyms ("a running shoe", "trainers", ...) in the caption templates ConceptPrune does not use
("catalog photo of {}", ...), with seeds from 1000. The model was trained on all captions, so
it knows these; unlearning does not.
"""
from __future__ import annotations

from .text import SYNONYMS, TEMPLATES

HELDOUT_FIRST_SEED = 1000
# TEMPLATES minus the ones that equal a ConceptPrune template once a class name is filled in.
HELDOUT_TEMPLATES = ("{} on a plain background", "catalog photo of {}", "a grayscale image of {}",
                     "a small photo of {}")


def heldout_synonyms(cls: str) -> list[str]:
    """The class's noun phrases other than "a/an {class}" itself."""
    own = {f"a {cls}", f"an {cls}", cls}
    alt = [s for s in SYNONYMS[cls] if s not in own]
    return alt or list(SYNONYMS[cls])


def heldout_prompt(cls: str, i: int) -> str:
    """The i-th held-out prompt of class `cls` (cycles synonyms first, then templates)."""
    alt = heldout_synonyms(cls)
    template = HELDOUT_TEMPLATES[(i // len(alt)) % len(HELDOUT_TEMPLATES)]
    return template.format(alt[i % len(alt)])


def heldout_rows(classes, seeds_per_class: int, first_seed: int = HELDOUT_FIRST_SEED):
    """PromptRows (case, prompt, class, seed): `seeds_per_class` held-out prompts per class, each
    with its own seed first_seed + i (so images do not depend on how many classes are asked for)."""
    from ..errors import RevivalError
    from ..evaluate.prompts import PromptRow

    if not isinstance(seeds_per_class, int) or seeds_per_class < 1:
        raise RevivalError(f"seeds per class must be a positive integer, got {seeds_per_class!r}.")
    rows, case = [], 0
    for c in classes:
        if c not in SYNONYMS:
            raise RevivalError(f"Unknown class {c!r}; the testbed knows: {', '.join(SYNONYMS)}.")
        for i in range(seeds_per_class):
            rows.append(PromptRow(case, heldout_prompt(c, i), c, first_seed + i))
            case += 1
    return rows
