"""Per-sample losses of one batch, the same way for every entry point.

Without a ``loss_fn`` a batch is classification data (a pair ``(x, y)`` or a dict of model inputs
with ``"labels"``) and l_i is the cross-entropy of the model's logits; with one, l_i is whatever
``loss_fn(model, batch)`` returns (e.g. ``imu_fast.lm.causal_lm_losses``). Both are validated so
that bad samples are named by their forget-set indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BatchPositionsError
from ..model_io import call_model, logits_of
from .batch import ForgetBatch
from .validate import (check_features, check_finite_inputs, check_label_range, check_labels, check_losses,
                       name_positions, on_device, split_classification)


@dataclass
class BatchLosses:
    """Per-sample losses of one batch; for classifiers also the logits and labels they came from."""

    losses: torch.Tensor  # (B,)
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class ClassificationBatch:
    inputs: object  # a tensor (called as model(x)) or a dict of keyword inputs
    labels: torch.Tensor  # (B,) int64 on the model's device


def prepare_classification(model: nn.Module, batch: ForgetBatch, device: torch.device, what: str
                           ) -> ClassificationBatch:
    """The batch's inputs and labels, validated and on ``device``."""
    inputs, labels = split_classification(batch.data, batch, what)
    inputs = on_device(inputs, device, f"{what} set's features")
    labels = check_labels(on_device(labels, device, f"{what} set's labels"), batch, what)
    check_features(inputs, model, what)
    check_finite_inputs(inputs, batch, what)
    return ClassificationBatch(inputs, labels)


def classification_logits(model: nn.Module, prepared: ClassificationBatch, batch: ForgetBatch, what: str
                          ) -> torch.Tensor:
    """One row of class scores per sample, checked against the labels."""
    logits = logits_of(call_model(model, prepared.inputs))
    if logits.dim() != 2 or logits.shape[0] != batch.size:
        raise ValueError(f"the model returned logits of shape {tuple(logits.shape)} for a batch of {batch.size} "
                         f"samples of the {what} set; classification needs one row of class scores per sample "
                         "(for token-level outputs pass loss_fn= with targets=)")
    check_label_range(prepared.labels, logits.shape[1], batch, what)
    return logits


def user_losses(model: nn.Module, loss_fn, batch: ForgetBatch, device: torch.device, what: str,
                finite: bool = True) -> torch.Tensor:
    """``loss_fn(model, batch)`` on the model's device, with errors naming the samples."""
    data = on_device(batch.data, device, f"{what} batch's tensors")
    check_finite_inputs(data, batch, what)
    try:
        losses = loss_fn(model, data)
    except BatchPositionsError as exc:
        raise name_positions(exc, batch, what) from None
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"(raised by loss_fn on the {what}-set {batch.name_rows(torch.arange(batch.size))})")
        raise
    return check_losses(losses, batch, what, finite)


def sample_losses(model: nn.Module, batch: ForgetBatch, loss_fn, device: torch.device, what: str = "forget", *,
                  finite: bool = True) -> BatchLosses:
    """Per-sample losses l_i of ``batch`` (cross-entropy without ``loss_fn``); non-finite losses are
    an error naming the samples unless ``finite`` is False."""
    if loss_fn is not None:
        return BatchLosses(user_losses(model, loss_fn, batch, device, what, finite))
    prepared = prepare_classification(model, batch, device, what)
    logits = classification_logits(model, prepared, batch, what)
    losses = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), prepared.labels,
                             reduction="none")
    return BatchLosses(check_losses(losses, batch, what, finite), logits, prepared.labels)
