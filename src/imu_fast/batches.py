"""Generic batches for the per-layer API: moving them to the model's device, and default losses."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .head import logits_of


def to_device(batch, device: torch.device):
    """Moves every tensor in a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        if batch.device.type != "cpu" and device.type != batch.device.type:
            raise ValueError(f"the model is on {device} but a batch tensor is on {batch.device}")
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def classification_losses(model, batch) -> torch.Tensor:
    """Per-sample cross-entropy for ``(x, y)`` batches: the default ``loss_fn``."""
    x, y = batch
    return F.cross_entropy(logits_of(model(x)), y, reduction="none")


def check_losses(losses, where: str) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn must return a 1-D tensor of per-sample losses, got {shape} ({where})")
    bad = (~torch.isfinite(losses.detach())).nonzero().flatten()
    if bad.numel():
        raise FloatingPointError(f"per-sample losses are NaN or Inf at positions {bad[:10].tolist()} ({where})")
    return losses
