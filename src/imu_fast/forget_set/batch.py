"""One batch of a forget set: the collated data together with the dataset index of every row.

Batches are whatever the user's collate function makes: a pair ``(x, y)``, a dict of model inputs
(Hugging Face convention, class labels under ``"labels"``), a tensor, or nested tuples/lists/dicts
of those. An entry is *per sample* when its leading dimension equals the batch size; other entries
(a shared mask, a scalar) are passed through unchanged when rows are selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ForgetBatch:
    data: Any  # the collated batch, on the device the loader left it on
    indices: torch.Tensor  # (B,) int64 dataset index of every row (CPU)
    positions: torch.Tensor  # (B,) int64 rank of every row in the forget set's ascending order (CPU)
    number: int = 0  # which batch of its pass this is

    @property
    def size(self) -> int:
        return int(self.indices.numel())

    def rows_by_index(self, rows) -> torch.Tensor:
        """Batch rows ``rows`` (a bool mask or positions), ordered by dataset index."""
        rows = torch.as_tensor(rows).cpu()
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        return rows[torch.argsort(self.indices[rows])]

    def name_rows(self, rows) -> str:
        """``"indices [..]"``: the dataset indices of batch rows ``rows``, ascending (at most ten)."""
        rows = self.rows_by_index(rows)
        return f"indices {self.indices[rows[:10]].tolist()}{' ...' if rows.numel() > 10 else ''}"

    def select(self, rows: torch.Tensor) -> "ForgetBatch":
        """The batch restricted to rows ``rows`` (positions within the batch, CPU int64)."""
        return ForgetBatch(take_rows(self.data, rows, self.size), self.indices[rows], self.positions[rows], self.number)


def _leaves(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _leaves(v)
    elif isinstance(data, (tuple, list)):
        for v in data:
            yield from _leaves(v)
    else:
        yield data


def tensors_of(data) -> list[torch.Tensor]:
    return [leaf for leaf in _leaves(data) if isinstance(leaf, torch.Tensor)]


def rows_of(data) -> int:
    """Number of samples in a collated batch: the leading dimension its per-sample tensors share."""
    sizes = {t.shape[0] for t in tensors_of(data) if t.dim() > 0}
    if len(sizes) == 1:
        return sizes.pop()
    if not sizes:
        raise ValueError(f"cannot tell how many samples a batch of type {type(data).__name__} holds: it has no "
                         "tensor with a batch dimension")
    raise ValueError(f"cannot tell how many samples a batch holds: its tensors have leading dimensions "
                     f"{sorted(sizes)}; give every per-sample tensor the same batch dimension")


def take_rows(data, rows: torch.Tensor, size: int):
    """Rows ``rows`` of every per-sample entry of ``data`` (leading dimension ``size``)."""
    if isinstance(data, torch.Tensor):
        if data.dim() > 0 and data.shape[0] == size:
            return data[rows.to(data.device)]
        return data
    if isinstance(data, dict):
        return {k: take_rows(v, rows, size) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # a namedtuple keeps its type
        return type(data)(*(take_rows(v, rows, size) for v in data))
    if isinstance(data, (tuple, list)):
        if len(data) == size and not any(isinstance(v, (torch.Tensor, dict, tuple, list)) for v in data):
            return type(data)(data[i] for i in rows.tolist())  # e.g. a list of strings, one per sample
        return type(data)(take_rows(v, rows, size) for v in data)
    return data


def to_device(data, device: torch.device):
    """Moves every tensor of a (nested) batch to ``device`` (callers check the devices first)."""
    if isinstance(data, torch.Tensor):
        return data if data.device == device else data.to(device, non_blocking=True)
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(to_device(v, device) for v in data))
    if isinstance(data, (tuple, list)):
        return type(data)(to_device(v, device) for v in data)
    return data


def fingerprint(data) -> tuple:
    """A cheap signature of a batch's contents, to tell whether a stream replays the same data.

    Each tensor contributes its shape and two weighted sums (the second weights elements by
    position, so a reordering shows too)."""
    parts = []
    for t in tensors_of(data):
        flat = t.detach().reshape(-1)
        if flat.is_complex():
            flat = torch.view_as_real(flat).reshape(-1)
        flat = flat.to(torch.float64)
        ramp = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64).remainder_(97)
        parts.append((tuple(t.shape), repr(float(flat.sum())), repr(float((flat * ramp).sum()))))
    return tuple(parts)
