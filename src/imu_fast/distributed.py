"""torch.distributed helpers: who this process is, its share of a data set, and the collectives.

When a process group with more than one process is initialised, every pass over a forget set
gives each process a contiguous block of the samples (``share``), reduces the sums (Fisher
numerators, gradient sums, counts) with ``reduce_sums`` and gathers per-sample results in rank
order with ``gather_rows``, so that blocks concatenate back into ascending dataset-index order.

A collective that one process never reaches leaves the others waiting until the group's timeout.
``together`` wraps the local work before a collective: if it raises on any process, it raises on
every process (with that process's error named), so that a bad sample found by one rank stops the
whole run instead of hanging it.

Tensors travel on the device the backend needs (CUDA for NCCL, the CPU for Gloo) and come back
on their own device.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

BUCKET_BYTES = 32 << 20  # gradients are summed in buckets of at most this size


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def share(n: int, process: int | None = None, processes: int | None = None) -> slice:
    """The contiguous block of ``range(n)`` that ``process`` of ``processes`` owns (this one by
    default); blocks differ in size by at most one, the first ones being the larger."""
    process = rank() if process is None else process
    processes = world_size() if processes is None else processes
    base, extra = divmod(n, processes)
    start = process * base + min(process, extra)
    return slice(start, start + base + (1 if process < extra else 0))


def _comm_device(t: torch.Tensor) -> torch.device:
    import torch.distributed as dist

    backend = str(dist.get_backend())
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return t.device  # a mixed backend ("cpu:gloo,cuda:nccl") serves each device itself


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sums each tensor over all processes, in place (a no-op outside a process group)."""
    if not active():
        return
    import torch.distributed as dist

    for t in tensors:
        device = _comm_device(t)
        if t.device == device:
            dist.all_reduce(t)
        else:
            moved = t.to(device)
            dist.all_reduce(moved)
            t.copy_(moved)


def all_gather_objects(value) -> list:
    """``value`` of every process, in rank order (small picklable objects only)."""
    import torch.distributed as dist

    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class PeerFailed(RuntimeError):
    """Another process of the group raised; this one stops too."""


@contextmanager
def together(what: str, enabled: bool = True):
    """Runs the block on every process; an exception on any one is raised on all of them.
    ``enabled=False`` (a process computing alone) makes it a plain block."""
    if not enabled or not active():
        yield
        return
    try:
        yield
    except PeerFailed:
        raise  # every process already knows (a nested block agreed on it)
    except BaseException as exc:
        _agree(exc, what)
        raise
    _agree(None, what)


def _agree(exc: BaseException | None, what: str) -> None:
    failed = torch.tensor([0 if exc is None else 1], dtype=torch.int64)
    all_reduce_sum_([failed])
    if not failed.item():
        return
    messages = all_gather_objects(None if exc is None else f"{type(exc).__name__}: {exc}")
    if exc is None:
        failures = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
        raise PeerFailed(f"{what} failed on another process ({failures})")


def reduce_sums(sums: dict[str, torch.Tensor], device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Every process's ``sums`` added up, key by key. A process may lack keys (it saw no sample):
    zeros of the right shape, on ``device`` (the model's), stand in for them."""
    if not active():
        return sums
    layouts = all_gather_objects({k: (tuple(v.shape), str(v.dtype)) for k, v in sums.items()})
    merged: dict[str, tuple] = {}
    for r, layout in enumerate(layouts):
        for key, shape in layout.items():
            if merged.setdefault(key, shape) != shape:
                raise ValueError(f"processes disagree on the shape of {key!r}: {merged[key]} on one, {shape} on rank {r}; "
                                 "every process must hold the same model")
    device = next((v.device for v in sums.values()), device or torch.device("cpu"))
    out = {}
    for key, (shape, dtype) in merged.items():
        out[key] = sums[key].clone() if key in sums else torch.zeros(shape, dtype=getattr(torch, dtype.split(".")[-1]),
                                                                         device=device)
    all_reduce_sum_(list(out.values()))
    return out


def reduce_count(n: int) -> int:
    if not active():
        return n
    t = torch.tensor([n], dtype=torch.int64)
    all_reduce_sum_([t])
    return int(t.item())


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``t`` concatenated in rank order (processes may hold different numbers
    of rows); the result is on ``t``'s device."""
    import torch.distributed as dist

    if not active():
        return t
    device = _comm_device(t)
    sizes = torch.tensor([t.shape[0]], dtype=torch.int64, device=device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)]).to(t.device)


def broadcast_(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrites each tensor with process ``src``'s value, in place."""
    import torch.distributed as dist

    if not active():
        return
    for t in tensors:
        device = _comm_device(t)
        moved = t.data if t.device == device else t.data.to(device)
        dist.broadcast(moved, src)
        if moved is not t.data:
            t.data.copy_(moved)


def sum_gradients_(params: list[nn.Parameter]) -> None:
    """Sums ``.grad`` of every parameter over all processes, in buckets. A parameter no process
    gave a gradient keeps ``grad = None`` (so the optimiser skips it, as in one process)."""
    if not active():
        return
    have = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    all_reduce_sum_([have])
    for p, seen in zip(params, have.tolist()):
        if seen and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p, seen in zip(params, have.tolist()) if seen]
    bucket: list[torch.Tensor] = []
    for g in grads + [None]:
        if bucket and (g is None or g.dtype != bucket[0].dtype or g.device != bucket[0].device
                       or sum(b.numel() for b in bucket) * g.element_size() + g.nbytes > BUCKET_BYTES):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            all_reduce_sum_([flat])
            offset = 0
            for b in bucket:
                b.copy_(flat[offset: offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket = []
        if g is not None:
            bucket.append(g)


def check_same(what: str, value) -> None:
    """Raises unless every process holds an equal ``value`` (a small picklable summary)."""
    if not active():
        return
    values = all_gather_objects(value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise ValueError(f"{what} differs between processes: rank 0 has {values[0]!r}, rank {differ[0]} has "
                         f"{values[differ[0]]!r}; every process must pass the same")


def check_same_weights(model: nn.Module, what: str) -> None:
    """Raises unless every process holds the same parameters, naming those that differ. Compares a
    cheap summary of each (float64 sum and absolute sum)."""
    if not active():
        return
    with torch.no_grad():
        mine = {name: (float(p.double().sum()), float(p.double().abs().sum())) for name, p in model.named_parameters()}
    everyone = all_gather_objects(mine)
    for r, theirs in enumerate(everyone[1:], start=1):
        differ = [name for name in mine if theirs.get(name) != everyone[0].get(name)] or ["(the parameter names)"]
        if theirs != everyone[0]:
            raise ValueError(f"{what} differ between processes: rank {r}'s {differ[:5]}"
                             f"{' ...' if len(differ) > 5 else ''} differ from rank 0's; every process needs the same "
                             "weights (wrap the model in DistributedDataParallel, which broadcasts them, or load the "
                             "same checkpoint everywhere)")


def is_fully_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without DTensor has no FSDP2 either
        DTensor = ()
    fsdp_types = []
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        fsdp_types.append(FullyShardedDataParallel)
        from torch.distributed.fsdp import FSDPModule

        fsdp_types.append(FSDPModule)
    except ImportError:
        pass
    if any(isinstance(m, tuple(fsdp_types)) for m in model.modules()):
        return True
    return bool(DTensor) and any(isinstance(p, DTensor) for p in model.parameters())


FSDP_REFUSAL = ("FullyShardedDataParallel (and fully_shard / DTensor parameters) is not supported: per-sample "
                "statistics and IMU's updates need every selected parameter whole on each process. Use "
                "DistributedDataParallel, or identical replicas of the model on every process (the forget set is "
                "then sharded by index and the sums reduced); for a model too large for one device, score through "
                "fewer layers with targets=")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; a fully sharded
    model is refused with the reason."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if is_fully_sharded(model):
        raise NotImplementedError(FSDP_REFUSAL)
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model
