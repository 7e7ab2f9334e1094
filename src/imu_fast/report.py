"""What an unlearning run reports back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class UnlearnReport:
    method: str
    config: dict
    n_forget: int
    n_kept: int  # samples with non-zero weight (visited by the loop)
    epoch_objective: list[float] = field(default_factory=list)  # mean minimised loss per epoch
    epoch_forget_loss: list[float] = field(default_factory=list)  # mean forget cross-entropy per epoch
    influence_seconds: float = 0.0
    update_seconds: float = 0.0
    weights: torch.Tensor | None = None  # (N,) weights computed before epoch 0
    scores: torch.Tensor | None = None  # (N,) influence scores before epoch 0, if computed
    diverged: bool = False
    message: str = ""

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_objective)
