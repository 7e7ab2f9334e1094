"""The weighted gradient-ascent loop shared by IMU, its uniform ablation and plain GA (IMU_SPEC 3).

Per mini-batch B of kept samples: L = -sum w_i l_i / sum w_i + alpha ||theta_head||_1, SGD with
the configured momentum and weight decay, forward passes in train mode (BatchNorm statistics
drift unless ``freeze_batchnorm``). Weights come from the influence scores (once, every epoch, or
per batch for the dynamic variant) or are uniform.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..config import UnlearnConfig
from ..forget_data import as_dataset, check_labels, model_device, split_batch
from ..head import logits_of
from ..influence import batch_influence, compute_dtype, influence_scores
from ..losses import imu_loss
from ..modes import preserved_modes
from ..report import UnlearnReport
from ..weights import dynamic_batch_weights, influence_weights


class _Indexed(Dataset):
    """Yields ``(x, y, i)`` so the loop can look up each sample's weight after shuffling."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def _train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _weights(model, dataset, head, cfg: UnlearnConfig, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if cfg.weighting == "uniform" or cfg.refresh == "batch":
        return torch.ones(n, dtype=torch.float64), None
    result = influence_scores(model, dataset, head=head, damping=cfg.damping, batch_size=cfg.batch_size,
                              backend=cfg.backend, progress=cfg.progress)
    return influence_weights(result.scores, top_fraction=cfg.top_fraction, clip_quantile=cfg.clip_quantile), result.scores


def run_weighted_ascent(model: nn.Module, forget, head: nn.Linear, cfg: UnlearnConfig, method: str) -> UnlearnReport:
    dataset = as_dataset(forget)
    n = len(dataset)
    if n == 0:
        raise ValueError("the forget set is empty: there is nothing to unlearn")
    device = model_device(model)
    report = UnlearnReport(method=method, config=dict(vars(cfg)), n_forget=n, n_kept=0)
    head_params = list(head.parameters())
    trained = head_params if cfg.scope == "head" else list(model.parameters())
    with preserved_modes(model):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(trained, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        weights = None
        for epoch in range(cfg.epochs):
            if weights is None or cfg.refresh == "epoch":
                started = time.perf_counter()
                weights, scores = _weights(model, dataset, head, cfg, n)
                report.influence_seconds += time.perf_counter() - started
                if epoch == 0:
                    report.weights, report.scores = weights, scores
                    report.n_kept = int((weights > 0).sum())
            kept = (weights > 0).nonzero().flatten().tolist()
            if not kept:
                report.message = "no sample has a negative influence score: nothing was unlearned"
                break
            loader = DataLoader(_Indexed(Subset(dataset, kept)), batch_size=cfg.batch_size, shuffle=True,
                                generator=generator)
            objective, forget_loss, batches = 0.0, 0.0, 0
            started = time.perf_counter()
            for x, y, local in tqdm(loader, desc=f"{method} epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                                    leave=False):
                x, y = split_batch((x, y), model, device, 0)
                idx = torch.as_tensor(kept)[local]
                if cfg.refresh == "batch":
                    t0 = time.perf_counter()
                    model.eval()
                    w = dynamic_batch_weights(batch_influence(model, head, x, y, damping=cfg.damping,
                                                              backend=cfg.backend, dtype=compute_dtype(head, None)))
                    report.influence_seconds += time.perf_counter() - t0
                    if w.sum() <= 0:
                        continue
                else:
                    w = weights[idx]
                _train_mode(model, cfg.freeze_batchnorm)
                logits = logits_of(model(x))
                check_labels(y, logits.shape[1], int(idx.min()))
                losses = F.cross_entropy(logits, y, reduction="none")
                loss = imu_loss(losses, w.to(device), l1_params=head_params, alpha=cfg.alpha)
                if not torch.isfinite(loss):
                    report.diverged = True
                    report.message = f"the loss became non-finite in epoch {epoch + 1}; stopped (lower lr or epochs)"
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                objective += loss.item()
                forget_loss += losses.mean().item()
                batches += 1
            report.update_seconds += time.perf_counter() - started
            if report.diverged:
                break
            report.epoch_objective.append(objective / max(batches, 1))
            report.epoch_forget_loss.append(forget_loss / max(batches, 1) if batches else math.nan)
        if report.n_kept == 0 and report.weights is not None and not report.message:
            report.message = "no sample has a negative influence score: nothing was unlearned"
    return report
