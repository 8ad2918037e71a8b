"""Testbed evaluation rows that unlearning did not use: other synonyms and templates than
ConceptPrune's prompts, seeds from 1000 (unlearning used seeds from 0, the least-damage search
from 2000)."""
from __future__ import annotations

from collections.abc import Callable, Sequence


def heldout_prompts(classes: Sequence[str], concept: str, erased_images: int = 20,
                    preserved_per_class: int = 4, first_seed: int = 1000):
    """Testbed evaluation rows unlearning did not use (`revival.evaluate.prompts.default_prompts`:
    other synonyms and templates than ConceptPrune's, seeds from `first_seed`): `erased_images`
    of the concept, `preserved_per_class` of every other class."""
    from revival.evaluate.prompts import PromptRow, default_prompts

    rows = []
    for c in classes:
        for r in default_prompts([c], erased_images if c == concept else preserved_per_class, first_seed):
            rows.append(PromptRow(len(rows), r.prompt, r.cls, r.seed))
    return rows


def more_heldout_rows(concept: str, first_seed: int) -> Callable[[int, int], list]:
    """rows of the concept's held-out images n..m-1 (the same captions and seeds a larger first
    look would have drawn)."""
    from revival.evaluate.prompts import PromptRow, default_prompts

    def more(n: int, m: int) -> list:
        rows = default_prompts([concept], m, first_seed)[n:m]
        return [PromptRow(i, r.prompt, r.cls, r.seed) for i, r in enumerate(rows)]

    return more
