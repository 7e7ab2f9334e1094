"""The plain mini-batch SGD loop the baselines share (NPO, RL, FT, Retrain).

Each method supplies one function ``step(out, batch) -> (objective, forget_losses)``, where ``out``
holds the batch's per-sample losses (cross-entropy on the true labels, or the user's ``loss_fn``)
and, for classifiers, its logits and labels, and ``batch`` its positions in the data set: it
returns the scalar to minimise and the per-sample forget losses to report (or ``None`` when the
batch is not forget data). The loop owns everything else, exactly as the weighted-ascent loop
does: SGD with the configured momentum and weight decay over exactly the trained parameters,
shuffling seeded by ``cfg.seed``, forward passes in train mode (BatchNorm statistics drift unless
``freeze_batchnorm``), a stop on a non-finite loss, and the per-epoch report.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import UnlearnConfig
from ..forget_set import BatchLosses, ForgetBatch, ForgetSet, sample_losses
from ..model_io import model_device
from ..report import UnlearnReport
from .common import has_training_batchnorm, make_optimizer, train_mode, training_scope

Step = Callable[[BatchLosses, ForgetBatch], "tuple[torch.Tensor, torch.Tensor | None]"]


def run_descent(model: nn.Module, data: ForgetSet, trained: list[nn.Parameter], cfg: UnlearnConfig,
                report: UnlearnReport, step: Step, loss_fn=None) -> UnlearnReport:
    """Minimises ``step``'s objective over ``data`` for ``cfg.epochs``, updating ``trained`` only."""
    device = model_device(model)
    with training_scope(model, trained):
        optimizer = make_optimizer(trained, cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        stepped = False
        for epoch in range(cfg.epochs):
            objective, forget_loss, batches, forget_batches = 0.0, 0.0, 0, 0
            started = time.perf_counter()
            for batch in tqdm(data.epoch_batches(generator=generator), desc=f"{report.method} epoch {epoch + 1}/"
                              f"{cfg.epochs}", disable=not cfg.progress, leave=False):
                train_mode(model, cfg.freeze_batchnorm)
                if batch.size == 1 and (data.size or 2) > 1 and has_training_batchnorm(model):
                    continue  # batch statistics of one sample are meaningless; shuffling shows it again
                # Non-finite losses before any update mean bad data or weights (an error naming the samples);
                # after updates, a diverged run (stopped and reported).
                out = sample_losses(model, batch, loss_fn, device, data.what, finite=not stepped)
                loss, losses = step(out, batch)
                if not torch.isfinite(loss):
                    report.diverged = True
                    report.message = f"the loss became non-finite in epoch {epoch + 1}; stopped (lower lr or epochs)"
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                stepped = True
                objective += loss.item()
                batches += 1
                if losses is not None:
                    forget_loss += losses.detach().mean().item()
                    forget_batches += 1
            report.update_seconds += time.perf_counter() - started
            if report.diverged:
                break
            report.epoch_objective.append(objective / batches if batches else math.nan)
            # NaN where the loop never saw forget data (FT, Retrain): it was not measured.
            report.epoch_forget_loss.append(forget_loss / forget_batches if forget_batches else math.nan)
    return report
