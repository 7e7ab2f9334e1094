"""Turning what a user calls a forget set into ordered, validated batches.

Accepted: a map-style ``Dataset`` of ``(x, y)``; a ``DataLoader`` over one (a shuffling loader is
rebuilt in sequential order, so scores keep the dataset's order); an ``IterableDataset`` or a
loader over one (iteration order); a pair of tensors ``(X, Y)``; or a list of samples.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler, TensorDataset


def as_dataset(forget) -> Dataset:
    """The dataset underneath ``forget`` (for sub-setting and length checks)."""
    if isinstance(forget, DataLoader):
        return forget.dataset
    if isinstance(forget, Dataset):
        return forget
    if isinstance(forget, (tuple, list)) and len(forget) == 2 and all(isinstance(t, torch.Tensor) for t in forget):
        x, y = forget
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"features and labels disagree on the number of samples: {x.shape[0]} vs {y.shape[0]}")
        return TensorDataset(x, y)
    if isinstance(forget, list):
        return forget  # a list of samples is a map-style dataset as far as DataLoader is concerned
    raise TypeError(
        "forget must be a map-style Dataset of (x, y), a DataLoader over one, a pair of tensors (X, Y) or a list "
        "of samples; "
        f"got {type(forget).__name__}"
    )


def nonempty_dataset(data, what: str) -> Dataset:
    """The map-style dataset under ``data`` (accepted as a forget set is), refusing an empty one;
    ``what`` names the set in errors ("forget", "retain", "test")."""
    try:
        dataset = as_dataset(data)
        n = len(dataset)
    except TypeError as exc:
        raise TypeError(f"the {what} set: {exc}") from None
    if n == 0:
        raise ValueError(f"the {what} set is empty")
    return dataset


def forget_size(forget) -> int | None:
    dataset = as_dataset(forget)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def ordered_loader(forget, batch_size: int) -> DataLoader:
    """A loader that yields the forget set in its own order, never shuffled."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(forget, DataLoader):
        if isinstance(forget.dataset, IterableDataset) or isinstance(forget.sampler, SequentialSampler):
            loader = forget
        else:
            loader = DataLoader(
                forget.dataset,
                batch_size=forget.batch_size or batch_size,
                shuffle=False,
                num_workers=forget.num_workers,
                collate_fn=forget.collate_fn,
                pin_memory=forget.pin_memory,
            )
    else:
        loader = DataLoader(as_dataset(forget), batch_size=batch_size, shuffle=False)
    if forget_size(forget) == 0:
        raise ValueError("the forget set is empty: there is nothing to unlearn")
    return loader


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _has_embedding(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Embedding) for m in model.modules())


def split_batch(batch, model: nn.Module, device: torch.device, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one ``(x, y)`` batch and move it to ``device``; ``start`` is its first sample's index."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"each forget batch must be a pair (x, y); batch at sample {start} is {type(batch).__name__}")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors (batch at sample {start})")
    if not x.is_floating_point() and not x.is_complex() and not _has_embedding(model):
        raise TypeError(
            f"features have integer dtype {x.dtype} but the model has no nn.Embedding to take token ids; "
            "convert them to floating point (e.g. x.float() / 255)"
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must be a 1-D tensor with one class index per sample; batch at sample {start} has "
            f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}")
    for t, what in ((x, "features"), (y, "labels")):
        if t.device != device and not (t.device.type == "cpu" and device.type == "cuda"):
            raise ValueError(
                f"the model is on {device} but the {what} are on {t.device}; move one to the other's device"
            )
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def check_labels(y: torch.Tensor, num_classes: int, start: int) -> None:
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if bad.numel():
        idx = (bad[:10] + start).tolist()
        raise ValueError(
            f"labels out of range [0, {num_classes}) at forget-set indices {idx}"
            f"{' ...' if bad.numel() > 10 else ''} (values {y[bad[:10]].tolist()})"
        )


def check_finite(t: torch.Tensor, what: str, start: int) -> None:
    bad_rows = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten()
    if bad_rows.numel():
        idx = (bad_rows[:10] + start).tolist()
        raise FloatingPointError(
            f"{what} contain NaN or Inf at forget-set indices {idx}{' ...' if bad_rows.numel() > 10 else ''}; "
            "check those inputs and the model's weights"
        )


def iterate_batches(loader: DataLoader, model: nn.Module, device: torch.device) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yields ``(start_index, x, y)`` with ``x`` and ``y`` validated and on ``device``."""
    start = 0
    for batch in loader:
        x, y = split_batch(batch, model, device, start)
        yield start, x, y
        start += x.shape[0]
    if start == 0:
        raise ValueError("the forget set is empty: there is nothing to unlearn")
