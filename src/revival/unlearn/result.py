"""What a pruning-based unlearning method did: one typed result for every method."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class UnlearnResult:
    """Per layer pruned counts, the settings, timings; `to_dict()` is the JSON report."""

    method: str
    config: dict
    n_target_prompts: int
    n_base_prompts: int
    layers: dict[str, dict] = field(default_factory=dict)  # weight key -> shape, pruned, numel, fraction
    seconds: dict[str, float] = field(default_factory=dict)
    report: object = None  # where `unlearn` wrote the JSON report (not part of to_dict)

    @property
    def pruned(self) -> int:
        return sum(v["pruned"] for v in self.layers.values())

    @property
    def total(self) -> int:
        return sum(v["numel"] for v in self.layers.values())

    def add_masks(self, masks: dict[str, torch.Tensor]) -> None:
        for key, m in masks.items():
            n = int(m.sum())
            self.layers[key] = {"shape": list(m.shape), "pruned": n, "numel": m.numel(), "fraction": n / m.numel()}

    def to_dict(self) -> dict:
        return {"method": self.method, "config": dict(self.config),
                "n_target_prompts": self.n_target_prompts, "n_base_prompts": self.n_base_prompts,
                "layers": {k: dict(v) for k, v in self.layers.items()},
                "totals": {"pruned": self.pruned, "numel": self.total,
                           "fraction": self.pruned / self.total if self.total else 0.0},
                "seconds": dict(self.seconds)}
