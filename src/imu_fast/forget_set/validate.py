"""One validation for every entry point: each problem is an error that names the samples at fault.

Classification batches are ``(x, y)`` pairs or dicts of model inputs with class labels under
``"labels"``; batches for a user's ``loss_fn`` are checked for what can be checked without knowing
the loss (devices, non-finite inputs, the shape and finiteness of the losses it returns).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BatchPositionsError
from ..model_io import has_embedding
from .batch import ForgetBatch, tensors_of, to_device

IGNORE_INDEX = -100


def _movable(t: torch.Tensor, device: torch.device) -> bool:
    return t.device == device or (t.device.type == "cpu" and device.type != "meta")


def on_device(data, device: torch.device, where: str):
    """``data`` moved to the model's ``device``; a tensor elsewhere than there or the CPU is an error."""
    for t in tensors_of(data):
        if not _movable(t, device):
            raise ValueError(f"the model is on {device} but the {where} are on {t.device}; move one to the other's device")
    return to_device(data, device)


def check_finite_rows(t: torch.Tensor, label: str, batch: ForgetBatch, what: str) -> None:
    """Rows of ``t`` (one per sample; ``label`` says what they are) holding NaN or Inf are named by
    their indices in the ``what`` set."""
    if not (t.is_floating_point() or t.is_complex()) or t.dim() == 0 or t.shape[0] != batch.size:
        return
    bad = (~torch.isfinite(t.detach())).reshape(t.shape[0], -1).any(dim=1)
    if bad.any():
        raise FloatingPointError(f"{label} contain NaN or Inf at {what}-set {batch.name_rows(bad.cpu())}; check those "
                                 "samples and the model's weights")


def check_finite_inputs(data, batch: ForgetBatch, what: str) -> None:
    for t in tensors_of(data):
        check_finite_rows(t, "inputs", batch, what)


def split_classification(data, batch: ForgetBatch, what: str):
    """``(inputs, labels)`` of a classification batch: a pair ``(x, y)`` or a dict with ``"labels"``."""
    if isinstance(data, dict):
        if "labels" not in data:
            raise TypeError(f"a dict batch of the {what} set needs its class labels under 'labels' (the Hugging Face "
                            f"convention), got keys {sorted(data)}; for other losses pass loss_fn= with targets=")
        return {k: v for k, v in data.items() if k != "labels"}, data["labels"]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"each batch of the {what} set must be a pair (x, y) or a dict of model inputs with 'labels'; the "
                    f"batch of {batch.name_rows(torch.arange(batch.size))} is a {type(data).__name__}"
                    f"{f' of length {len(data)}' if isinstance(data, (tuple, list)) else ''}. For other batches pass "
                    "loss_fn= (with targets=)")


def check_labels(labels, batch: ForgetBatch, what: str) -> torch.Tensor:
    """Class-index labels as int64: integer dtype, one per sample, no -100."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels of the {what} set must be a tensor of class indices, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype} "
                        f"({what}-set {batch.name_rows(torch.arange(batch.size))})")
    if labels.dim() != 1 or labels.shape[0] != batch.size:
        hint = (" (one per token: for language models pass loss_fn=imu_fast.lm.causal_lm_losses with targets=)"
                if labels.dim() == 2 and labels.shape[0] == batch.size else "")
        raise ValueError(f"labels must be a 1-D tensor with one class index per sample; the {what} batch of "
                         f"{batch.size} samples has labels of shape {tuple(labels.shape)}{hint}")
    ignored = labels == IGNORE_INDEX
    if ignored.any():
        raise ValueError(f"label -100 (ignored) at {what}-set {batch.name_rows(ignored.cpu())}: in classification every "
                         f"{what} sample needs its class; remove those samples from the {what} set")
    return labels.long()


def check_label_range(labels: torch.Tensor, num_classes: int, batch: ForgetBatch, what: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        rows = batch.rows_by_index(bad.cpu())
        raise ValueError(f"labels out of range [0, {num_classes}) at {what}-set {batch.name_rows(rows)} "
                         f"(values {labels.cpu()[rows[:10]].tolist()})")


def check_features(inputs, model: nn.Module, what: str) -> None:
    """Integer features need a layer that takes ids: without one they are almost surely raw pixels."""
    if isinstance(inputs, torch.Tensor) and not (inputs.is_floating_point() or inputs.is_complex()):
        if not has_embedding(model):
            raise TypeError(f"features of the {what} set have integer dtype {inputs.dtype} but the model has no "
                            "nn.Embedding to take token ids; convert them to floating point (e.g. x.float() / 255)")


def check_losses(losses, batch: ForgetBatch, what: str, finite: bool = True) -> torch.Tensor:
    """A 1-D floating tensor with one loss per sample, all finite unless ``finite`` is False
    (a training loop tells a diverged model from bad data itself)."""
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or not losses.is_floating_point():
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn must return a 1-D floating tensor of per-sample losses, got {shape} "
                         f"(on the {what} set)")
    if losses.shape[0] != batch.size:
        raise ValueError(f"loss_fn returned {losses.shape[0]} losses for a batch of {batch.size} samples of the {what} "
                         "set; it must return one loss per sample")
    if finite:
        check_finite_rows(losses, "per-sample losses", batch, what)
    return losses


def name_positions(exc: BatchPositionsError, batch: ForgetBatch, what: str) -> ValueError:
    """The same error with batch positions replaced by forget-set indices."""
    return ValueError(f"{exc.reason} at {what}-set {batch.name_rows(torch.tensor(exc.positions, dtype=torch.long))}")
