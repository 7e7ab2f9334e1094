"""From influence scores to per-sample unlearning strengths (the paper recipe, IMU_SPEC.md section 2)."""

from __future__ import annotations

import warnings

import torch

from . import checks


class NothingToUnlearnWarning(UserWarning):
    """Every influence score is >= 0, so the recipe keeps no sample."""


def _check_scores(scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if scores.dim() != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    bad = (~torch.isfinite(scores)).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"scores contain NaN or Inf at indices {bad[:10].tolist()}")
    return scores


def influence_weights(scores: torch.Tensor, *, top_fraction: float = 0.1, clip_quantile: float = 0.93) -> torch.Tensor:
    """Weights of length N, zero for samples not kept.

    1. keep S = {i : I_i < 0}; 2. keep the top floor(top_fraction * |S|) (at least 1) of S by |I_i|,
    ties broken by lower index; 3. w_i = sqrt|I_i| clipped from above at the ``clip_quantile``
    quantile of the kept weights (linear interpolation, as ``torch.quantile``).
    If no score is negative, warns ``NothingToUnlearnWarning`` and returns all zeros.
    """
    checks.real("top_fraction", top_fraction, low=0, high=1, low_open=True)
    checks.real("clip_quantile", clip_quantile, low=0, high=1)
    scores = _check_scores(scores)
    weights = torch.zeros_like(scores)
    negative = (scores < 0).nonzero().flatten()
    if negative.numel() == 0:
        warnings.warn(
            "no forget sample has a negative influence score, so the IMU recipe keeps none: nothing will be "
            "unlearned. Check the model and labels, or use uniform weights (method='ga' or weighting='uniform')",
            NothingToUnlearnWarning,
            stacklevel=2,
        )
        return weights
    keep = max(1, int(top_fraction * negative.numel()))
    order = torch.sort(scores[negative].abs(), descending=True, stable=True).indices[:keep]
    kept = negative[order]
    w = scores[kept].abs().sqrt()
    cap = torch.quantile(w, clip_quantile)
    weights[kept] = torch.minimum(w, cap)
    return weights


def dynamic_batch_weights(scores: torch.Tensor, *, clip_quantile: float = 0.93) -> torch.Tensor:
    """Per-batch weights of the dynamic variant: sqrt|I| for negative I, else 0, clipped at the
    ``clip_quantile`` quantile of the whole batch's weights (zeros included)."""
    scores = _check_scores(scores)
    w = torch.where(scores < 0, scores.abs().sqrt(), torch.zeros_like(scores))
    return torch.minimum(w, torch.quantile(w, clip_quantile))
