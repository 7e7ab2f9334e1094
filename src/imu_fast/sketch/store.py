"""Where sketch rows go: a tensor in memory, or row shards on disk (numpy ``.npy`` files).

On disk a folder holds ``metadata.json`` (what was sketched, how, of which model), ``indices.npy``
(the dataset index of every row) and ``shard-00000.npy``, ``shard-00001.npy``, ... of
``shard_rows`` rows each (the last one shorter). A shard is assembled in memory and written to a
temporary file that is renamed into place when it is complete, so a shard file that exists is
complete and an interrupted run leaves only whole shards: resuming recomputes the batches of
the missing ones. Memory stays at one shard per open shard (a batch spans at most two).
Reading maps the shards (``numpy.load(mmap_mode="r")``) and hands out row chunks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

METADATA = "metadata.json"
INDICES = "indices.npy"
NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64}


def shard_path(folder: Path, s: int) -> Path:
    return folder / f"shard-{s:05d}.npy"


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class ShardWriter:
    """Collects rows by position into shards of ``shard_rows`` and writes each once complete."""

    def __init__(self, folder: Path, n: int, dim: int, shard_rows: int, dtype: str):
        self.folder, self.n, self.dim, self.shard_rows, self.dtype = folder, n, dim, shard_rows, dtype
        self.shards = -(-n // shard_rows)
        self._buffers: dict[int, np.ndarray] = {}
        self._filled: dict[int, int] = {}
        self.done = self.complete()

    def size(self, s: int) -> int:
        return min(self.shard_rows, self.n - s * self.shard_rows)

    def complete(self) -> set[int]:
        return {s for s in range(self.shards) if shard_path(self.folder, s).exists()}

    def write(self, start: int, rows: torch.Tensor) -> None:
        """Rows for positions start .. start + len(rows) (contiguous); complete shards are skipped."""
        values = rows.detach().cpu().numpy()
        pos = start
        while pos < start + len(values):
            s = pos // self.shard_rows
            end = min(start + len(values), (s + 1) * self.shard_rows)
            if s not in self.done:
                buf = self._buffers.get(s)
                if buf is None:
                    buf = self._buffers[s] = np.empty((self.size(s), self.dim), dtype=NUMPY_DTYPES[self.dtype])
                buf[pos - s * self.shard_rows:end - s * self.shard_rows] = values[pos - start:end - start]
                self._filled[s] = self._filled.get(s, 0) + end - pos
                if self._filled[s] == self.size(s):
                    _atomic_save(shard_path(self.folder, s), self._buffers.pop(s))
                    del self._filled[s]
                    self.done.add(s)
            pos = end

    def close(self) -> None:
        if self._buffers:
            left = sorted(self._buffers)
            raise RuntimeError(f"sketch shards {left} were not filled: the data yielded fewer rows than announced")


class ShardedSketches:
    """N x K sketches held in row shards on disk, memory-mapped on demand."""

    def __init__(self, folder: Path, n: int, dim: int, shard_rows: int, dtype: str):
        self.folder, self.n, self.dim, self.shard_rows, self.dtype_name = Path(folder), n, dim, shard_rows, dtype
        self.shards = -(-n // shard_rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype_name)

    def __len__(self) -> int:
        return self.n

    def shard(self, s: int) -> np.ndarray:
        path = shard_path(self.folder, s)
        if not path.exists():
            raise FileNotFoundError(f"sketch shard {path} is missing: the run that wrote {self.folder} did not finish; "
                                    "run gradient_sketches with the same out= again to complete it")
        return np.load(path, mmap_mode="r")

    def chunks(self, rows: int | None = None) -> Iterator[torch.Tensor]:
        """Consecutive row blocks (each at most ``rows``, within one shard), as tensors copied from disk."""
        step = rows or self.shard_rows
        for s in range(self.shards):
            mapped = self.shard(s)
            for r in range(0, len(mapped), step):
                yield torch.from_numpy(np.array(mapped[r:r + step]))
            del mapped

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            key = key + self.n if key < 0 else key
            if not 0 <= key < self.n:
                raise IndexError(f"row {key} out of range for {self.n} sketches")
            return torch.from_numpy(np.array(self.shard(key // self.shard_rows)[key % self.shard_rows]))
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step != 1:
                raise IndexError("sharded sketches take contiguous row slices (step 1)")
            parts = []
            for s in range(start // self.shard_rows, -(-stop // self.shard_rows) if stop > start else 0):
                lo, hi = max(start, s * self.shard_rows), min(stop, (s + 1) * self.shard_rows)
                parts.append(np.array(self.shard(s)[lo - s * self.shard_rows:hi - s * self.shard_rows]))
            if not parts:
                return torch.empty(0, self.dim, dtype=self.dtype)
            return torch.from_numpy(np.concatenate(parts))
        raise TypeError(f"index sketches with an int or a slice of rows, got {type(key).__name__}")

    def to_tensor(self) -> torch.Tensor:
        """All rows in memory (N x K): only for sets that fit."""
        return self[0:self.n]
