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
    epoch_forget_loss: list[float] = field(default_factory=list)  # mean forget loss per epoch
    influence_seconds: float = 0.0
    update_seconds: float = 0.0
    indices: torch.Tensor | None = None  # (N,) dataset index of each entry of weights and scores
    weights: torch.Tensor | None = None  # (N,) weights computed before epoch 0
    scores: torch.Tensor | None = None  # (N,) influence scores before epoch 0, if computed
    trained: list[str] = field(default_factory=list)  # parameters the optimiser updated
    left_frozen: list[str] = field(default_factory=list)  # selected, but frozen by the user: not touched
    batchnorm: str = ""  # how BatchNorm running statistics behaved during the updates
    diverged: bool = False
    message: str = ""
    steps: int = 0  # optimiser steps made
    stopped_by: str = ""  # the stop criterion that ended the run early ("" if none did)
    final_forget: dict = field(default_factory=dict)  # the last stop check: forget_accuracy, forget_loss
    resumed_from_step: int | None = None  # the checkpoint's step count, if the run was resumed

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_objective)
