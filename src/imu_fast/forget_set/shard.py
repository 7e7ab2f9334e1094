"""A forget set split across the processes of a torch.distributed group, by dataset index.

``local_share`` gives this process a contiguous block of the ascending indices, so per-sample
results gathered in rank order come back in the one-process order. Before splitting, every
process must hold the same set: the same number of samples, the same indices, and the same
first, middle and last samples (read cheaply), so that per-process data (a DistributedSampler's
share, a local batch) is refused rather than silently mixed; pass ``shard=False`` to compute over
each process's own data alone.
"""

from __future__ import annotations

import torch

from .. import distributed
from .digest import batch_digest, indices_digest
from .source import ForgetSet


def _probe_digest(forget: ForgetSet) -> int:
    n = len(forget)
    probes = sorted({0, n // 2, n - 1})
    chunks = [(k, torch.tensor([p])) for k, p in enumerate(probes)]
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: keep it from the run's random stream
        return sum(batch_digest(batch) for batch in forget.batches_of(chunks))


def check_same_set(forget: ForgetSet) -> None:
    """Raises unless every process holds the same forget set (see the module docstring)."""
    if forget.is_stream:
        raise ValueError(f"the {forget.what} set is a stream, which cannot be split across the {distributed.world_size()} "
                         "processes by index; give a map-style dataset")
    distributed.check_same(f"the {forget.what} set (number of samples, indices, first/middle/last samples)",
                           (len(forget), indices_digest(forget.indices), _probe_digest(forget)))


def local_share(forget: ForgetSet, shard: bool | None = None) -> ForgetSet:
    """This process's block of ``forget`` inside a process group (the whole set outside one, or
    with ``shard=False``)."""
    if shard is False or not distributed.active():
        return forget
    check_same_set(forget)
    n, processes = len(forget), distributed.world_size()
    if n < processes:
        raise ValueError(f"the {forget.what} set has {n} samples, fewer than the {processes} processes sharing it; "
                         "run on fewer processes or pass shard=False")
    block = distributed.share(n)
    return forget.subset(torch.arange(n)[block])


def set_digest(forget: ForgetSet, shard: bool | None = None) -> int:
    """The content digest of the whole set (each process reads its share; the sums are reduced)."""
    local = local_share(forget, shard)
    total = sum(batch_digest(batch) for batch in local.batches()) % (1 << 128)
    if shard is False or not distributed.active():
        return total
    return sum(distributed.all_gather_objects(total)) % (1 << 128)
