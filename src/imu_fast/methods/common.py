"""Pieces shared by the unlearning loops: indexed batches and per-sample losses of any kind."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..batches import check_losses, to_device
from ..forget_data import split_batch
from ..head import logits_of


class IndexedDataset(Dataset):
    """Yields ``(sample, i)`` so a loop can look up per-sample state (weights, labels) after shuffling."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i], i


def start_training(model: nn.Module, params: list[nn.Parameter], cfg) -> tuple[torch.optim.Optimizer, torch.Generator]:
    """Freezes every parameter but ``params`` (callers restore the flags with preserved_modes) and
    returns the run's SGD optimiser and the seeded generator that shuffles its batches."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer, torch.Generator().manual_seed(cfg.seed)


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def check_labels_in(y: torch.Tensor, idx: torch.Tensor, num_classes: int, what: str) -> None:
    """Errors naming the dataset indices ``idx`` of labels outside ``[0, num_classes)``."""
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten().cpu()
    if bad.numel():
        raise ValueError(
            f"labels out of range [0, {num_classes}) in the {what} set at indices {idx.cpu()[bad[:10]].tolist()}"
            f"{' ...' if bad.numel() > 10 else ''} (values {y.cpu()[bad[:10]].tolist()})"
        )


@dataclass
class BatchLosses:
    """Per-sample losses of one batch; for classifiers also the logits and labels they came from."""

    losses: torch.Tensor  # (B,) cross-entropy on the true labels, or the user's loss_fn
    idx: torch.Tensor  # (B,) dataset indices
    logits: torch.Tensor | None = None
    y: torch.Tensor | None = None


def batch_losses(model: nn.Module, batch, idx: torch.Tensor, loss_fn, device: torch.device, what: str) -> BatchLosses:
    """Forward one batch. Without ``loss_fn`` the batch is ``(x, y)`` for a classifier."""
    if loss_fn is not None:
        losses = check_losses(loss_fn(model, to_device(batch, device)), f"loss_fn on the {what} set")
        return BatchLosses(losses, idx.to(device))
    try:
        x, y = split_batch(batch, model, device, int(idx.min()))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"in the {what} set: {exc}") from None
    logits = logits_of(model(x))
    check_labels_in(y, idx, logits.shape[1], what)
    losses = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y, reduction="none")
    return BatchLosses(losses, idx.to(device), logits, y)
