"""The weighted gradient-ascent loop shared by IMU, its uniform ablation and plain GA (IMU_SPEC 3).

Per mini-batch B of kept samples: L = -sum w_i l_i / sum w_i + alpha ||theta_c||_1, SGD with the
configured momentum and weight decay, forward passes in train mode (BatchNorm statistics drift
unless ``freeze_batchnorm``). Weights come from the influence scores through theta_c (once,
every epoch, or per batch for the dynamic variant) or are uniform. l_i is the cross-entropy of a
classifier, or the user's per-sample ``loss_fn`` (e.g. a sequence's mean token loss).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import UnlearnConfig
from ..forget_set import ForgetSet, sample_losses
from ..losses import imu_loss
from ..model_io import model_device
from ..report import UnlearnReport
from ..weights import dynamic_batch_weights, influence_weights
from .common import make_optimizer, train_mode, training_scope
from .influence_params import InfluenceParams


def _weights(model, forget: ForgetSet, theta: InfluenceParams | None, cfg: UnlearnConfig):
    """``(weights, scores)`` over the forget set's positions; None weights mean uniform over every
    sample (a stream's size may not be known yet), None scores that none were computed."""
    if cfg.weighting == "uniform" or cfg.refresh == "batch":
        return None, None
    scores = theta.scores(model, forget, cfg)
    return influence_weights(scores, top_fraction=cfg.top_fraction, clip_quantile=cfg.clip_quantile), scores


def _run_epoch(model, theta, l1_params, optimizer, forget, kept, weights, generator, cfg, report, loss_fn, device):
    """One pass over the kept samples; returns (summed objective, summed forget loss, batches)."""
    objective, forget_loss, batches = 0.0, 0.0, 0
    for batch in forget.epoch_batches(kept, generator=generator):
        if cfg.refresh == "batch":
            started = time.perf_counter()
            w = dynamic_batch_weights(theta.batch_scores(model, batch, cfg))
            report.influence_seconds += time.perf_counter() - started
            if w.sum() <= 0:
                continue  # nothing in this batch supports the forget loss
        else:
            w = torch.ones(batch.size, dtype=torch.float64) if weights is None else weights[batch.positions]
        train_mode(model, cfg.freeze_batchnorm)
        # Non-finite losses before any update are bad data (an error naming the samples); after, divergence.
        losses = sample_losses(model, batch, loss_fn, device, finite=not (batches or report.epoch_objective)).losses
        loss = imu_loss(losses, w.to(device), l1_params=l1_params, alpha=cfg.alpha)
        if not torch.isfinite(loss):
            report.diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        objective += loss.item()
        forget_loss += losses.mean().item()
        batches += 1
    return objective, forget_loss, batches


def run_weighted_ascent(model: nn.Module, forget: ForgetSet, theta: InfluenceParams | None, trained: list,
                        cfg: UnlearnConfig, report: UnlearnReport, loss_fn=None) -> UnlearnReport:
    """``theta`` (the influence parameters) may be None only for uniform weights, scope 'all', alpha 0."""
    device = model_device(model)
    l1_params = theta.parameters(model) if theta is not None else []
    bar = tqdm(total=cfg.epochs, desc=report.method, unit="epoch", disable=not cfg.progress, leave=False)
    first = True
    with training_scope(model, trained):
        optimizer = make_optimizer(trained, cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        weights = None
        for epoch in range(cfg.epochs):
            if first or cfg.refresh == "epoch":
                started = time.perf_counter()
                weights, scores = _weights(model, forget, theta, cfg)
                report.influence_seconds += time.perf_counter() - started
                if first:
                    report.weights, report.scores = weights, scores
                    report.n_kept = int((weights > 0).sum()) if weights is not None else (forget.size or 0)
                first = False
            kept = None if weights is None else (weights > 0).nonzero().flatten()
            if kept is not None and kept.numel() == 0:
                report.message = "no sample has a negative influence score: nothing was unlearned"
                break
            started, influence_before = time.perf_counter(), report.influence_seconds
            objective, forget_loss, batches = _run_epoch(model, theta, l1_params, optimizer, forget, kept, weights,
                                                         generator, cfg, report, loss_fn, device)
            # Per-batch influence (dynamic variant) is reported under influence, not updates.
            report.update_seconds += time.perf_counter() - started - (report.influence_seconds - influence_before)
            if report.diverged:
                report.message = f"the loss became non-finite in epoch {epoch + 1}; stopped (lower lr or epochs)"
                break
            report.epoch_objective.append(objective / max(batches, 1))
            report.epoch_forget_loss.append(forget_loss / batches if batches else math.nan)
            bar.update(1)
            bar.set_postfix(forget_loss=f"{report.epoch_forget_loss[-1]:.3f}")
    bar.close()
    if report.weights is None and forget.size is not None and cfg.refresh != "batch":
        report.weights = torch.ones(len(forget), dtype=torch.float64)  # uniform: every sample, weight 1
        report.n_kept = len(forget)
    return report
