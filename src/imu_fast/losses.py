"""The IMU objective, usable from any training loop (IMU_SPEC.md section 3)."""

from __future__ import annotations

from typing import Iterable

import torch


def imu_loss(
    per_sample_losses: torch.Tensor,
    weights: torch.Tensor,
    *,
    l1_params: Iterable[torch.Tensor] = (),
    alpha: float = 0.0,
) -> torch.Tensor:
    """L = - sum_i w_i l_i / sum_i w_i + alpha * sum ||theta||_1 over ``l1_params``.

    Minimising L ascends the weighted forget loss. With uniform weights it is plain gradient ascent.
    A batch in which no sample is kept (all weights zero, as most batches of a loop over the whole
    forget set are with ``top_fraction=0.1``) contributes nothing: the loss is a zero that is still
    part of the graph (``backward()`` works and gives zero gradients), without the L1 term.
    """
    if per_sample_losses.dim() != 1:
        raise ValueError(f"per_sample_losses must be 1-D (one loss per sample), got shape {tuple(per_sample_losses.shape)}")
    if weights.shape != per_sample_losses.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} does not match losses shape {tuple(per_sample_losses.shape)}")
    weights = weights.to(per_sample_losses.device, per_sample_losses.dtype)
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("weights must be finite and non-negative")
    total = weights.sum()
    if total <= 0:
        return per_sample_losses[:0].sum()  # an empty sum: zero, yet connected to the graph
    loss = -(weights * per_sample_losses).sum() / total
    if alpha:
        loss = loss + alpha * sum(p.abs().sum() for p in l1_params)
    return loss
