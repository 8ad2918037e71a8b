"""revival: concept revival in pruning-based unlearning for diffusion models, and its defense.

Implements "Roots Beneath the Cut" (Zhang et al., CVPR 2026, arXiv 2603.06640).

The weight-space core (checkpoints, masks, attack, defense, metrics) imports only torch and
safetensors. The model-side parts (unlearning, testbed, evaluation, demo) import diffusers and
transformers, so they are loaded on first use:

    >>> import revival
    >>> ckpt = revival.load_checkpoint("unet.safetensors")
    >>> layers = revival.select_layers(ckpt.tensors)
    >>> updates, result = revival.revive(ckpt.tensors, layers, revival.AttackConfig(keep=0.6))
    >>> revival.save_checkpoint(ckpt, "revived.safetensors", updates)
"""
from __future__ import annotations

import importlib

from revival.attack import AttackConfig, AttackResult, LayerResult, revive
from revival.attack.revive import revive_checkpoint
from revival.release.inspect import exposure, inspect_checkpoint
from revival.intervals import Proportion, paired_difference, wilson
from revival.io import Checkpoint, load_checkpoint, save_checkpoint
from revival.release.layers import DEFAULT_LAYERS, detect_pruned_layers, select_layers, target_layers
from revival.defense.obfuscate import ObfuscateResult, defend, obfuscate
from revival.errors import RevivalError
from revival.release.masks import MaskReport, guess_method, mask_report, pruned_mask, zero_pattern
from revival.attack.recovery import ScoreResult, score, score_checkpoints

__version__ = "0.1.0"

# name -> module holding it; imported on first attribute access (they pull in diffusers).
_LAZY = {
    "ConceptPruneConfig": "revival.unlearn.conceptprune",
    "ConceptPruneResult": "revival.unlearn.conceptprune",
    "conceptprune": "revival.unlearn.conceptprune",
    "ErasureConfig": "revival.unlearn.erasures",
    "ERASURES": "revival.unlearn",
    "erase": "revival.unlearn.run",
    "unlearn_method": "revival.unlearn.run",
    "load_pipeline": "revival.testbed",
    "CLASSES": "revival.testbed",
    "EvalResult": "revival.evaluate",
    "evaluate_concept": "revival.evaluate",
    "generate": "revival.evaluate",
    "get_classifier": "revival.evaluate",
    "DemoConfig": "revival.story.demo",
    "AuditConfig": "revival.audit.run",
    "AuditResult": "revival.audit.result",
    "audit_states": "revival.audit.run",
    "decide": "revival.audit.verdict",
    "exit_code": "revival.audit.verdict",
    "model_card": "revival.audit.card",
    "strongest_attack": "revival.attack.attackers.strongest",
    "run_attacker": "revival.attack.attackers",
    "AttackContext": "revival.attack.attackers",
    "apply_defense": "revival.defense",
    "run_demo": "revival.story.demo",
    "least_damage": "revival.unlearn.least_damage",
    "feature_distance": "revival.evaluate.fid",
    "load_model": "revival.model.loader",
    "ExperimentConfig": "revival.story.experiment",
    "load_config": "revival.story.experiment",
    "run_experiment": "revival.story.experiment",
    "relearn_state": "revival.attack.attackers.relearn",
    "RelearnBudget": "revival.attack.attackers.relearn",
    "RELEARN_BUDGETS": "revival.attack.attackers.relearn",
    "load_never_learned": "revival.audit.never_learned",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'revival' has no attribute {name!r}")


__all__ = [
    "AttackConfig", "AttackResult", "Checkpoint", "DEFAULT_LAYERS", "LayerResult", "MaskReport",
    "ObfuscateResult", "RevivalError", "ScoreResult", "defend", "load_checkpoint", "mask_report",
    "obfuscate", "pruned_mask", "revive", "save_checkpoint", "score", "score_checkpoints",
    "revive_checkpoint", "inspect_checkpoint", "exposure", "Proportion", "wilson", "paired_difference",
    "select_layers", "__version__", "detect_pruned_layers", "target_layers", "zero_pattern", "guess_method",
    *_LAZY,
]
