"""revival's releases as eval-unlearn techniques (and one offline metric).

eval-unlearn (`pip install 'revival[eval-unlearn]'`) benchmarks concept unlearning: a config names
a technique and a metric; a technique is built from its config and `generate(prompts, seed)`
returns PIL images. revival registers four techniques through its package metadata (entry point
group `eval_unlearn.techniques`), one a stage of `revival demo`:

    revival_conceptprune      the ConceptPrune release (testbed: the least skill ratio that erases,
                              as the demo; a Stable Diffusion folder: the paper's preset)
    revival_revived           that release revived by revival's attack (the zeros it left)
    revival_defended          the release defended (revival's default defense, resample)
    revival_defended_attack   the defended release under the strongest of revival's attackers

and one metric, `revival_concept_accuracy` (the erased concept's accuracy on held-out prompts,
judged by the testbed classifier or an SD classifier: offline). Every eval-unlearn metric then
measures revival: the attack success rate of `revival_revived` against `revival_conceptprune` is
the paper's result in the benchmark's own terms.

Each technique builds its release once and caches the changed layers by content (model weights,
concept, settings, seed) under `cache_dir` (default ~/.cache/revival/eval-unlearn).

Nothing here is imported by the rest of revival; importing it without eval-unlearn installed
raises one RevivalError saying what to install.
"""
from __future__ import annotations

from revival.errors import RevivalError

try:
    import eval_unlearn as _eval_unlearn  # noqa: F401
except ImportError:
    raise RevivalError("revival's eval-unlearn techniques need eval-unlearn: "
                       "pip install 'revival[eval-unlearn]'.") from None

from revival.eval_unlearn.config import STAGES, TechniqueConfig  # noqa: E402

__all__ = ["STAGES", "TechniqueConfig"]
