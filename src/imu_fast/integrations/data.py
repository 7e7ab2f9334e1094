"""Carrying each forget sample's dataset index through a host framework's data pipeline.

A Hugging Face ``Trainer`` shuffles, shards and collates the train dataset itself, so the loss
never learns which samples a batch holds. ``IndexedDataset`` adds the index to every sample (a
dict, the Hugging Face convention) and ``IndexCollator`` collates it into a tensor beside the
user's collated batch; ``take_indices`` pops it in ``compute_loss``, where a batch without it is
an error (uniform weights would be silently wrong). ``Rows`` restricts a dataset to some of its
rows, keeping their indices (the samples a once-computed weighting keeps).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import Dataset, IterableDataset

INDEX_KEY = "imu_index"


def check_map_style(dataset, what: str) -> None:
    if dataset is None:
        raise ValueError(f"{what} needs a train_dataset: the forget set to unlearn")
    if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"{what} needs a map-style train_dataset (every forget sample has a dataset index); got "
                        f"{type(dataset).__name__}. Materialise a stream first, e.g. datasets.Dataset.from_list(...)")
    if len(dataset) == 0:
        raise ValueError(f"{what}: the train_dataset (the forget set) is empty: there is nothing to unlearn")


class IndexedDataset(Dataset):
    """``dataset[i]`` (a dict) with ``key: i`` added."""

    def __init__(self, dataset, key: str = INDEX_KEY):
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        sample = self.dataset[i]
        if not isinstance(sample, Mapping):
            raise TypeError(f"train_dataset[{i}] is a {type(sample).__name__}; the trainer needs dict samples (model "
                            "inputs by name, the Hugging Face convention)")
        if self.key in sample:
            raise ValueError(f"train_dataset[{i}] already has a key {self.key!r}, which the trainer uses for the "
                             "forget-set index; rename it")
        return {**sample, self.key: int(i)}


class Rows(Dataset):
    """The rows ``rows`` of ``dataset``, in that order (row ``j`` is ``dataset[rows[j]]``)."""

    def __init__(self, dataset, rows: torch.Tensor):
        self.dataset, self.rows = dataset, [int(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        return self.dataset[self.rows[j]]


class IndexCollator:
    """Collates the samples without ``key`` through ``collate``, then adds their ``key`` values as
    an int64 tensor."""

    def __init__(self, collate, key: str = INDEX_KEY):
        self.collate, self.key = collate, key

    def __call__(self, features: list):
        has = [isinstance(f, Mapping) and self.key in f for f in features]
        if not any(has):  # not forget samples (an eval_dataset): collated as they are
            return self.collate(features)
        if not all(has):
            raise KeyError(f"some samples of a batch carry a forget-set index {self.key!r} and others do not; a batch "
                           "must come from the trainer's train_dataset alone")
        batch = self.collate([{k: v for k, v in f.items() if k != self.key} for f in features])
        if not isinstance(batch, Mapping):
            raise TypeError(f"the data collator returned a {type(batch).__name__}; the trainer needs a dict batch")
        batch[self.key] = torch.tensor([int(f[self.key]) for f in features], dtype=torch.long)
        return batch


def take_indices(batch: Mapping, key: str, where: str) -> tuple[dict, torch.Tensor]:
    """``(batch without key, its indices on the CPU)``; a batch without them is an error."""
    if not isinstance(batch, Mapping) or key not in batch:
        have = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise KeyError(f"{where}: the batch carries no forget-set indices under {key!r} (it has {have}). Without them "
                       "the samples cannot be weighted; keep the trainer's data collator (or one that passes "
                       f"{key!r} through) and remove_unused_columns from dropping it")
    indices = batch[key]
    indices = torch.as_tensor(indices).detach().cpu().long().reshape(-1)
    return {k: v for k, v in batch.items() if k != key}, indices


class DropKey:
    """``collate`` with ``key`` removed from the batch it returns (whole-forget-set passes)."""

    def __init__(self, collate, key: str):
        self.collate, self.key = collate, key

    def __call__(self, features: list):
        batch = self.collate(features)
        return {k: v for k, v in batch.items() if k != self.key} if isinstance(batch, Mapping) else batch
