"""The plain mini-batch SGD loop the baselines share (NPO, RL, FT, Retrain).

Each method supplies one function ``step(logits, y, idx) -> (objective, forget_ce)``: the scalar
to minimise for a batch, and the batch's per-sample cross-entropy on the true forget labels (or
``None`` when the batch is not forget data). The loop owns everything else, exactly as the
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
from ..forget_data import as_dataset, model_device, split_batch
from ..head import logits_of
from ..modes import preserved_modes
from ..report import UnlearnReport
from .common import IndexedDataset, train_mode

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def dataset_of(data, what: str) -> Dataset:
    """The map-style dataset under ``data`` (as the forget set is accepted), non-empty."""
    try:
        dataset = as_dataset(data)
        n = len(dataset)
    except TypeError as exc:
        raise TypeError(f"the {what} set: {exc}") from None
    if n == 0:
        raise ValueError(f"the {what} set is empty")
    return dataset


def trained_parameters(model: nn.Module, head: nn.Module | None, cfg: UnlearnConfig) -> list[nn.Parameter]:
    if cfg.scope == "all":
        return list(model.parameters())
    if head is None:
        raise ValueError("scope='head' needs the classifier head")
    return list(head.parameters())


def check_labels_in(y: torch.Tensor, idx: torch.Tensor, num_classes: int, what: str) -> None:
    """Errors naming the dataset indices ``idx`` of labels outside ``[0, num_classes)``."""
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten().cpu()
    if bad.numel():
        raise ValueError(
            f"labels out of range [0, {num_classes}) in the {what} set at indices {idx.cpu()[bad[:10]].tolist()}"
            f"{' ...' if bad.numel() > 10 else ''} (values {y.cpu()[bad[:10]].tolist()})"
        )


def _has_training_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def run_descent(model: nn.Module, dataset: Dataset, params: list[nn.Parameter], cfg: UnlearnConfig,
                report: UnlearnReport, step: Step, what: str) -> UnlearnReport:
    """Minimises ``step``'s objective over ``dataset`` (``what`` names it in errors) for ``cfg.epochs``."""
    device = model_device(model)
    n = len(dataset)
    with preserved_modes(model):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(IndexedDataset(dataset), batch_size=cfg.batch_size, shuffle=True, generator=generator)
        for epoch in range(cfg.epochs):
            objective, forget_ce, batches, forget_batches = 0.0, 0.0, 0, 0
            started = time.perf_counter()
            for x, y, idx in tqdm(loader, desc=f"{report.method} epoch {epoch + 1}/{cfg.epochs}",
                                  disable=not cfg.progress, leave=False):
                try:
                    x, y = split_batch((x, y), model, device, int(idx.min()))
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"in the {what} set: {exc}") from None
                train_mode(model, cfg.freeze_batchnorm)
                if x.shape[0] == 1 and n > 1 and _has_training_batchnorm(model):
                    continue  # batch statistics of one sample are meaningless; shuffling shows it again
                logits = logits_of(model(x))
                check_labels_in(y, idx, logits.shape[1], what)
                loss, ce = step(logits, y, idx.to(device))
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
