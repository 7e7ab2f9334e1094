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
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..config import UnlearnConfig
from ..forget_data import as_dataset, model_device
from ..losses import imu_loss
from ..modes import preserved_modes
from ..report import UnlearnReport
from ..weights import dynamic_batch_weights, influence_weights
from .common import IndexedDataset, batch_losses, start_training, train_mode
from .influence_params import InfluenceParams


def _weights(model, dataset, theta: InfluenceParams | None, cfg: UnlearnConfig, n: int):
    """``(weights, scores)`` for the whole forget set; scores are None when not computed."""
    if cfg.weighting == "uniform" or cfg.refresh == "batch":
        return torch.ones(n, dtype=torch.float64), None
    scores = theta.scores(model, dataset, cfg)
    return influence_weights(scores, top_fraction=cfg.top_fraction, clip_quantile=cfg.clip_quantile), scores


def _run_epoch(model, theta, l1_params, optimizer, loader, kept, weights, cfg, report, loss_fn, device):
    """One pass over the kept samples; returns (summed objective, summed forget loss, batches)."""
    objective, forget_loss, batches = 0.0, 0.0, 0
    for batch, local in loader:
        idx = torch.as_tensor(kept)[local]
        if cfg.refresh == "batch":
            started = time.perf_counter()
            w = dynamic_batch_weights(theta.batch_scores(model, batch, device, cfg))
            report.influence_seconds += time.perf_counter() - started
            if w.sum() <= 0:
                continue  # nothing in this batch supports the forget loss
        else:
            w = weights[idx]
        train_mode(model, cfg.freeze_batchnorm)
        losses = batch_losses(model, batch, idx, loss_fn, device, "forget").losses
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


def run_weighted_ascent(model: nn.Module, forget, theta: InfluenceParams | None, cfg: UnlearnConfig,
                        method: str, loss_fn=None) -> UnlearnReport:
    """``theta`` (the influence parameters) may be None only for uniform weights, scope 'all', alpha 0."""
    dataset = as_dataset(forget)
    n = len(dataset)
    if n == 0:
        raise ValueError("the forget set is empty: there is nothing to unlearn")
    device = model_device(model)
    report = UnlearnReport(method=method, config=dict(vars(cfg)), n_forget=n, n_kept=0)
    l1_params = theta.parameters(model) if theta is not None else []
    trained = l1_params if cfg.scope == "head" else list(model.parameters())
    bar = tqdm(total=cfg.epochs, desc=method, unit="epoch", disable=not cfg.progress, leave=False)
    with preserved_modes(model):
        optimizer, generator = start_training(model, trained, cfg)
        weights = None
        for epoch in range(cfg.epochs):
            if weights is None or cfg.refresh == "epoch":
                started = time.perf_counter()
                weights, scores = _weights(model, dataset, theta, cfg, n)
                report.influence_seconds += time.perf_counter() - started
                if epoch == 0:
                    report.weights, report.scores = weights, scores
                    report.n_kept = int((weights > 0).sum())
            kept = (weights > 0).nonzero().flatten().tolist()
            if not kept:
                report.message = "no sample has a negative influence score: nothing was unlearned"
                break
            loader = DataLoader(IndexedDataset(Subset(dataset, kept)), batch_size=cfg.batch_size, shuffle=True,
                                generator=generator)
            started, influence_before = time.perf_counter(), report.influence_seconds
            objective, forget_loss, batches = _run_epoch(model, theta, l1_params, optimizer, loader, kept, weights,
                                                         cfg, report, loss_fn, device)
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
    return report
