"""The plain mini-batch SGD loop the baselines share (NPO, RL, FT, Retrain).

Each method supplies one function ``step(out) -> (objective, forget_loss)``, where ``out`` holds
the batch's per-sample losses (cross-entropy on the true labels, or the user's ``loss_fn``) and,
for classifiers, its logits and labels: it returns the scalar to minimise and the per-sample
forget losses to report (or ``None`` when the batch is not forget data). The loop owns everything else, exactly as the
weighted-ascent loop does: SGD with the configured momentum and weight decay, shuffling seeded by
``cfg.seed``, forward passes in train mode (BatchNorm statistics drift unless
``freeze_batchnorm``), a stop on a non-finite loss, and the per-epoch report.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import UnlearnConfig
from ..forget_data import model_device
from ..modes import preserved_modes
from ..report import UnlearnReport
from .common import BatchLosses, IndexedDataset, batch_losses, start_training, train_mode

Step = Callable[[BatchLosses], "tuple[torch.Tensor, torch.Tensor | None]"]


def _has_training_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def run_descent(model: nn.Module, dataset: Dataset, params: list[nn.Parameter], cfg: UnlearnConfig,
                report: UnlearnReport, step: Step, what: str, loss_fn=None) -> UnlearnReport:
    """Minimises ``step``'s objective over ``dataset`` (``what`` names it in errors) for ``cfg.epochs``."""
    device = model_device(model)
    n = len(dataset)
    with preserved_modes(model):
        optimizer, generator = start_training(model, params, cfg)
        loader = DataLoader(IndexedDataset(dataset), batch_size=cfg.batch_size, shuffle=True, generator=generator)
        for epoch in range(cfg.epochs):
            objective, forget_ce, batches, forget_batches = 0.0, 0.0, 0, 0
            started = time.perf_counter()
            for batch, idx in tqdm(loader, desc=f"{report.method} epoch {epoch + 1}/{cfg.epochs}",
                                   disable=not cfg.progress, leave=False):
                train_mode(model, cfg.freeze_batchnorm)
                if len(idx) == 1 and n > 1 and _has_training_batchnorm(model):
                    continue  # batch statistics of one sample are meaningless; shuffling shows it again
                loss, ce = step(batch_losses(model, batch, idx, loss_fn, device, what))
                if not torch.isfinite(loss):
                    report.diverged = True
                    report.message = f"the loss became non-finite in epoch {epoch + 1}; stopped (lower lr or epochs)"
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                objective += loss.item()
                batches += 1
                if ce is not None:
                    forget_ce += ce.detach().mean().item()
                    forget_batches += 1
            report.update_seconds += time.perf_counter() - started
            if report.diverged:
                break
            report.epoch_objective.append(objective / batches if batches else math.nan)
            # NaN where the loop never saw forget data (FT, Retrain): it was not measured.
            report.epoch_forget_loss.append(forget_ce / forget_batches if forget_batches else math.nan)
    return report
