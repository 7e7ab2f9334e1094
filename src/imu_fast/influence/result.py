"""What an influence computation returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InfluenceResult:
    """Scores in ascending dataset-index order, with the statistics they came from.

    ``indices[k]`` is the dataset index of ``scores[k]`` (for a DataLoader with a sampler, the
    sampler's samples, sorted; for a stream, positions in the stream). Weights computed from
    ``scores`` line up with ``indices`` the same way.
    """

    scores: torch.Tensor  # (N,) on CPU
    indices: torch.Tensor  # (N,) int64 dataset indices, ascending
    fisher: torch.Tensor | dict  # head: (C, W) damped Fisher diagonal, W = D + bias; targets: per parameter
    mean_grad: torch.Tensor | dict  # the mean forget gradient, in the same form
    head: str  # the head module's name, or the influence parameters' names
    backend: str
    damping: float
    seconds: float

    @property
    def n(self) -> int:
        return self.scores.numel()
