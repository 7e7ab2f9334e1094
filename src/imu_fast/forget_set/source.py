"""Resolving what a user calls a forget set, once, into samples with dataset indices.

Accepted forms, and the dataset index each sample gets:

- a map-style dataset (a ``torch.utils.data.Dataset``, a Hugging Face ``datasets.Dataset``, any
  object with ``__len__`` and ``__getitem__``, or a list of samples): indices ``0 .. N-1``;
- a ``DataLoader`` over one: the samples its ``sampler`` or ``batch_sampler`` names, sorted
  ascending (a sampler that names a sample twice is refused; ``drop_last`` never drops a sample,
  since the indices come from the sampler under the batch sampler); the loader's collate
  function, batch size and workers are kept, its shuffling is not;
- columns: a tuple of tensors ``(X, Y, ...)``, a list ``[X, Y]`` of two tensors, a
  ``TensorDataset``, or a dict of tensors (e.g. a tokenizer's output plus ``"labels"``), sliced
  directly without a DataLoader: indices ``0 .. N-1``;
- an ``IterableDataset`` or a DataLoader over one: a stream, indexed by position. A stream is read
  once per pass; where an algorithm needs a second pass it is read again and must yield the same
  data (checked), otherwise the error says what to do instead.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, TensorDataset

from .batch import ForgetBatch, fingerprint, rows_of

# DataLoader settings carried over when the forget set's loader is rebuilt in index order.
_LOADER_SETTINGS = ("num_workers", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                    "prefetch_factor", "persistent_workers")


class _Columns:
    """Tensors (or lists) sharing a leading sample axis, as a tuple/list or a dict; sliced directly."""

    def __init__(self, columns, what: str):
        self.columns = columns
        values = list(columns.values()) if isinstance(columns, dict) else list(columns)
        sizes = {len(v) for v in values}
        if len(sizes) != 1:
            names = list(columns) if isinstance(columns, dict) else list(range(len(values)))
            shown = {name: len(v) for name, v in zip(names, values)}
            raise ValueError(f"the {what} set's columns disagree on the number of samples: {shown}")
        self.n = sizes.pop()

    def take(self, idx: torch.Tensor):
        def one(v):
            if isinstance(v, torch.Tensor):
                return v[idx.to(v.device)]
            return [v[i] for i in idx.tolist()]

        if isinstance(self.columns, dict):
            return {k: one(v) for k, v in self.columns.items()}
        return [one(v) for v in self.columns]  # a list, as the default collate function makes


def _is_columns(data) -> bool:
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        return True
    if isinstance(data, list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0].dim() > 0 and data[1].dim() > 0 and data[0].shape[0] == data[1].shape[0]
    return isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values())


def _is_map_style(data) -> bool:
    if isinstance(data, IterableDataset):
        return False
    if isinstance(data, (Dataset, list)):
        return True
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, dict))


def _sampler_indices(loader: DataLoader, what: str) -> list[int]:
    """Every dataset index the loader would visit, in its own order, without dropping any."""
    if loader.batch_sampler is None:
        raise ValueError(f"the {what} loader has batch_size=None, so its dataset returns whole batches and no "
                         "sample has a dataset index of its own; give the DataLoader a batch_size")
    batches = loader.batch_sampler
    if isinstance(batches, BatchSampler):
        keys = list(batches.sampler)  # the sampler under the batch sampler: drop_last cannot drop a sample
    else:
        keys = [key for batch in batches for key in batch]
    indices = []
    for key in keys:
        if isinstance(key, torch.Tensor) and key.numel() == 1:
            key = key.item()
        if isinstance(key, bool) or not isinstance(key, int) and not hasattr(key, "__index__"):
            raise TypeError(f"the {what} loader's sampler yields {type(key).__name__} keys; the forget-set pipeline "
                            "needs integer dataset indices")
        indices.append(int(key))
    return indices


def _check_unique(indices: torch.Tensor, what: str) -> None:
    values, counts = torch.unique(indices, return_counts=True)
    repeated = values[counts > 1]
    if repeated.numel():
        raise ValueError(f"the {what} loader's sampler names dataset indices {repeated[:10].tolist()}"
                         f"{' ...' if repeated.numel() > 10 else ''} more than once (sampling with replacement?); "
                         f"a {what} set names each sample once")
    if indices.numel() and indices.min() < 0:
        raise ValueError(f"the {what} loader's sampler yields negative dataset indices, e.g. {int(indices.min())}")


class ForgetSet:
    """A forget (or retain, or test) set resolved once: which samples, in which order, batched how.

    ``indices`` holds the dataset index of every sample, ascending (None for a stream until its
    first full pass); ``batches()`` yields :class:`ForgetBatch` es in that order and
    ``epoch_batches()`` in a shuffled one.
    """

    def __init__(self, *, what: str, batch_size: int, columns: _Columns | None = None, dataset=None,
                 indices: torch.Tensor | None = None, collate_fn=None, loader_settings: dict | None = None,
                 stream=None):
        self.what = what
        self.batch_size = batch_size
        self._columns = columns
        self._dataset = dataset
        self.indices = indices
        self._collate_fn = collate_fn
        self._loader_settings = loader_settings or {}
        self._stream = stream
        self._signatures: list[tuple] | None = None  # a stream's batches as first read

    @property
    def is_stream(self) -> bool:
        return self._stream is not None

    def __len__(self) -> int:
        if self.indices is None:
            raise TypeError(f"the {self.what} stream's length is known only after a full pass")
        return int(self.indices.numel())

    @property
    def size(self) -> int | None:
        return None if self.indices is None else int(self.indices.numel())

    # -- reading --------------------------------------------------------------------------------

    def _map_batches(self, positions: torch.Tensor, batch_size: int, wanted: set[int] | None = None
                     ) -> Iterator[ForgetBatch]:
        chunks = [(k, chunk) for k, chunk in enumerate(torch.split(positions, batch_size))
                  if wanted is None or k in wanted]
        yield from self.batches_of(chunks)

    def batches_of(self, chunks: list[tuple[int, torch.Tensor]]) -> Iterator[ForgetBatch]:
        """Batch ``number`` of each ``(number, positions)`` in ``chunks``, read in one pass (one
        DataLoader for all of them); an empty chunk gives a batch of no sample and no data."""
        if self.is_stream:
            raise TypeError(f"the {self.what} stream is read in its own order; it has no batches by position")
        if self._columns is not None:
            for k, chunk in chunks:
                yield ForgetBatch(self._columns.take(self.indices[chunk]), self.indices[chunk], chunk, k)
            return
        full = [(k, chunk) for k, chunk in chunks if chunk.numel()]
        loader = DataLoader(self._dataset, batch_sampler=[self.indices[chunk].tolist() for _, chunk in full],
                            collate_fn=self._collate_fn, **self._loader_settings)
        loaded = zip(full, loader)
        for k, chunk in chunks:
            if not chunk.numel():
                yield ForgetBatch(None, self.indices[chunk], chunk, k)
                continue
            (_, chunk), data = next(loaded)
            yield ForgetBatch(data, self.indices[chunk], chunk, k)

    def subset(self, positions: torch.Tensor) -> "ForgetSet":
        """The samples at ``positions`` (ascending) as a set of their own, read from the same source;
        batch positions then count within the subset."""
        if self.is_stream:
            raise TypeError(f"the {self.what} stream cannot be split by position; give a map-style dataset")
        return ForgetSet(what=self.what, batch_size=self.batch_size, columns=self._columns, dataset=self._dataset,
                         indices=self.indices[positions], collate_fn=self._collate_fn,
                         loader_settings=self._loader_settings)

    def _stream_batches(self) -> Iterator[ForgetBatch]:
        """The stream in its order; a second pass must replay the first exactly."""
        first_pass = self._signatures is None
        seen: list[tuple] = []
        start = count = 0
        for number, data in enumerate(self._stream):
            size = rows_of(data)
            signature = (size, fingerprint(data))
            if first_pass:
                seen.append(signature)
            elif number >= len(self._signatures) or self._signatures[number] != signature:
                raise ValueError(self._replay_error(f"batch {number} (from sample {start}) differs from the first pass"))
            positions = torch.arange(start, start + size)
            yield ForgetBatch(data, positions, positions, number)
            start += size
            count = number + 1
        if first_pass:
            if start == 0:
                raise ValueError(f"the {self.what} set is empty (its stream yielded no sample; a stream that was read "
                                 "before may be exhausted)")
            self._signatures = seen
            self.indices = torch.arange(start)
        elif count != len(self._signatures):
            raise ValueError(self._replay_error(f"it yielded {count} batches, the first pass {len(self._signatures)}"))

    def _replay_error(self, detail: str) -> str:
        return (f"the {self.what} stream cannot be replayed: on a second pass {detail}. A stream that is random, "
                f"reshuffled or exhausted after one pass cannot be read twice; give a map-style dataset, or a larger "
                f"memory_budget so that the first pass is kept")

    def batches(self, batch_size: int | None = None, wanted: set[int] | None = None) -> Iterator[ForgetBatch]:
        """Every sample, in ascending index order (stream order for a stream); with ``wanted``, only
        the batches of those numbers (a stream is still read whole, and checked)."""
        if self.is_stream:
            for batch in self._stream_batches():
                if wanted is None or batch.number in wanted:
                    yield batch
            return
        yield from self._map_batches(torch.arange(len(self)), batch_size or self.batch_size, wanted)

    def epoch_batches(self, positions: torch.Tensor | None = None, *, shuffle: bool = True,
                      generator: torch.Generator | None = None, batch_size: int | None = None
                      ) -> Iterator[ForgetBatch]:
        """The samples at ``positions`` (all if None) for one training epoch, shuffled by ``generator``
        as a ``DataLoader(shuffle=True)`` would; a stream is visited in its own order."""
        batch_size = batch_size or self.batch_size
        if self.is_stream:
            wanted = None if positions is None else set(positions.tolist())
            for batch in self._stream_batches():
                if wanted is not None:
                    keep = torch.tensor([int(p) in wanted for p in batch.positions], dtype=torch.bool)
                    if not keep.any():
                        continue
                    batch = batch.select(keep.nonzero().flatten())
                yield batch
            return
        yield from self._map_batches(self.epoch_order(positions, shuffle=shuffle, generator=generator), batch_size)

    def epoch_order(self, positions: torch.Tensor | None = None, *, shuffle: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """The positions one epoch visits, in order: ``positions`` (all if None), shuffled by
        ``generator`` as a ``DataLoader(shuffle=True)`` would."""
        if positions is None:
            positions = torch.arange(len(self))
        if shuffle:
            # The draws of DataLoader(shuffle=True, generator=generator): a worker seed, then the permutation.
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.tensor(list(RandomSampler(range(positions.numel()), generator=generator)), dtype=torch.long)
            positions = positions[order]
        return positions


def as_forget_set(data, *, batch_size: int = 256, what: str = "forget") -> ForgetSet:
    """Resolves ``data`` (any accepted form, see the module docstring) into a :class:`ForgetSet`."""
    if isinstance(data, ForgetSet):
        return data
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(data, DataLoader):
        loader_batch = data.batch_size or batch_size
        if isinstance(data.dataset, IterableDataset):
            return ForgetSet(what=what, batch_size=loader_batch, stream=data)
        indices = torch.tensor(_sampler_indices(data, what), dtype=torch.long)
        _check_unique(indices, what)
        settings = {k: getattr(data, k) for k in _LOADER_SETTINGS if hasattr(data, k)}
        if not settings.get("num_workers"):
            settings = {k: settings[k] for k in ("pin_memory",) if k in settings}
        batches = data.batch_sampler
        if not isinstance(batches, BatchSampler) and getattr(batches, "batch_size", None):
            loader_batch = batches.batch_size
        forget = ForgetSet(what=what, batch_size=loader_batch, dataset=data.dataset,
                           indices=torch.sort(indices).values, collate_fn=data.collate_fn,
                           loader_settings=settings)
    elif isinstance(data, IterableDataset):
        return ForgetSet(what=what, batch_size=batch_size, stream=DataLoader(data, batch_size=batch_size))
    elif isinstance(data, TensorDataset):
        columns = _Columns(list(data.tensors), what)
        forget = ForgetSet(what=what, batch_size=batch_size, columns=columns, indices=torch.arange(columns.n))
    elif _is_columns(data):
        columns = _Columns(data, what)
        forget = ForgetSet(what=what, batch_size=batch_size, columns=columns, indices=torch.arange(columns.n))
    elif _is_map_style(data):
        forget = ForgetSet(what=what, batch_size=batch_size, dataset=data, indices=torch.arange(len(data)))
    else:
        raise TypeError(
            f"the {what} set must be a map-style dataset, a DataLoader, an IterableDataset, a tuple of tensors "
            f"(X, Y, ...), a dict of tensors, or a list of samples; got {type(data).__name__}")
    if len(forget) == 0:
        raise ValueError(f"the {what} set is empty" + (": there is nothing to unlearn" if what == "forget" else ""))
    return forget
