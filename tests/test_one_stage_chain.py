"""The stage chain is defined once: every composer (demo, experiment, eval-unlearn) reads it."""
from __future__ import annotations

import pytest

from revival.errors import RevivalError
from revival.story import stages


def test_aliases_read_as_the_chain_names_and_unknown_names_get_one_sentence():
    assert stages.canonical("defended") == "obfuscated"
    assert stages.canonical("Obfuscated+Attack") == "obfuscated_revived"
    assert stages.canonical("release") == stages.canonical("pruned") == "unlearned"
    with pytest.raises(RevivalError, match="unknown stage 'retrained'"):
        stages.canonical("retrained")
    with pytest.raises(RevivalError, match="unknown stage"):    # a hold is no stage of the chain
        stages.canonical("robust")
    assert stages.stage("robust").parent == "original"


def test_lineage_and_order_follow_the_parents():
    assert stages.lineage("obfuscated_revived") == ("original", "unlearned", "obfuscated", "obfuscated_revived")
    assert stages.lineage("revived") == ("original", "unlearned", "revived")
    assert stages.in_order(["defended_attack", "original", "revived", "defended"]) == (
        "original", "revived", "obfuscated", "obfuscated_revived")
    for s in stages.CHAIN[1:]:                     # every stage is built from an earlier one
        assert stages.STAGES.index(s.parent) < stages.STAGES.index(s.name)


def test_the_composers_read_the_one_chain():
    from revival.story.demo_report import HOLD_LABELS, STAGE_LABELS, STAGES
    from revival.story.experiment_config import ExperimentConfig

    assert STAGES == stages.STAGES and list(STAGE_LABELS) == list(stages.STAGES)
    assert list(HOLD_LABELS) == list(stages.HOLD_STAGES)
    assert ExperimentConfig.__dataclass_fields__["stages"].default == stages.STAGES
    from revival.eval_unlearn.config import STAGES as TECHNIQUE_STAGES
    from revival.eval_unlearn.techniques import TECHNIQUES

    assert TECHNIQUE_STAGES == stages.STAGES[1:]
    assert sorted(t.stage for t in TECHNIQUES.values()) == sorted(stages.STAGES[1:])
