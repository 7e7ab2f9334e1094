"""Influence through a classifier head: the exact closed form (IMU_SPEC.md sections 1 and 4).

One eval-mode forward pass over the forget set captures each sample's head input h_i and logits
z_i. From e_i = softmax(z_i) - onehot(y_i) the head's per-sample gradient is e_i h~_i^T, so

    F = (E*E)^T (H~*H~) / N + damping,   G = E^T H~ / N,   M = G / F,   I_i = -e_i^T M h~_i

are computed by the head_moments and head_influence ops; no per-sample gradient, and no N x P
matrix, ever exists. E and H (O(N (C + D)) memory) are kept up to ``memory_budget`` bytes; batches
beyond it are recomputed by a second forward pass, so memory stays bounded for any N.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..dispatch import resolve_backend
from ..capture.head import check_head, find_head, head_forward
from ..forget_set import ForgetBatch, ForgetSet, local_share, prepare_classification
from ..forget_set.validate import check_finite_rows, check_label_range
from ..model_io import model_device
from ..modes import preserved_modes
from ..ops import head_influence, head_moments
from .cache import BudgetCache
from .result import InfluenceResult
from .solve import damped_ratio


def compute_dtype(head: nn.Linear, dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype or head.weight.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32  # half inputs accumulate in float32
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    return dtype


def head_residuals(model: nn.Module, head: nn.Linear, label: str, batch: ForgetBatch, dtype: torch.dtype,
                   seen=None, prepared=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, H)`` of one batch: softmax residuals and head inputs, validated, in ``dtype``.
    ``seen`` = (head inputs, logits rows) of a forward pass already run on this batch."""
    if prepared is None:
        prepared = prepare_classification(model, batch, model_device(model), "forget")
    h, z = seen if seen is not None else head_forward(model, head, prepared.inputs, label)
    if z.shape[0] != batch.size:
        raise ValueError(f"the model returned {z.shape[0]} rows of logits for a batch of {batch.size} samples")
    check_label_range(prepared.labels, z.shape[1], batch, "forget")
    check_finite_rows(z, "logits", batch, "forget")
    check_finite_rows(h, "head inputs", batch, "forget")
    e = torch.softmax(z.to(dtype), dim=1)
    e[torch.arange(e.shape[0], device=e.device), prepared.labels] -= 1
    return e, h.to(dtype)


def batch_head_influence(model: nn.Module, head: nn.Linear, batch: ForgetBatch, *, damping: float,
                         backend: str, across_processes: bool = False) -> torch.Tensor:
    """Scores of one batch computed from that batch alone (the 'dynamic' refresh of IMU_SPEC 3);
    the caller puts the model in eval mode. With ``across_processes`` the batch is this process's
    share of a batch split over a process group (possibly empty): the sums are reduced and the
    whole batch's scores, in rank order, come back."""
    label = check_head(model, head)
    bias = head.bias is not None
    sums, e = {}, None
    with distributed.together("the batch's influence", across_processes):
        if batch.size:
            e, h = head_residuals(model, head, label, batch, compute_dtype(head, None))
            sums = dict(zip(("grad", "fisher"), head_moments(e, h, bias, backend=backend)))
    n = batch.size
    if across_processes:
        sums, n = distributed.reduce_sums(sums, model_device(model)), distributed.reduce_count(n)
    m, _, _ = damped_ratio({label: sums["grad"]}, {label: sums["fisher"]}, n, damping)
    scores = head_influence(e, h, m[label], bias, backend=backend) if e is not None else m[label].new_zeros(0)
    return distributed.gather_rows(scores) if across_processes else scores


def head_influence_scores(model: nn.Module, forget: ForgetSet, *, head: nn.Module | None, damping: float,
                          backend: str, dtype: torch.dtype | None, memory_budget: int, progress: bool,
                          shard: bool | None = None) -> InfluenceResult:
    """Inside a process group each process reads its block of the forget set; the sums are reduced
    and the scores gathered, so every process gets the one-process result."""
    device = model_device(model)
    started = time.perf_counter()
    whole, forget = forget, local_share(forget, shard)
    sharded = forget is not whole
    cache = BudgetCache(memory_budget)
    grad_sum = fisher_sum = None
    n = 0
    bar = tqdm(total=forget.size, desc="influence", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model), distributed.together("the influence pass over the forget set", sharded):
        model.eval()
        for batch in forget.batches():
            prepared = prepare_classification(model, batch, device, "forget")
            seen = None
            if head is None:  # found on the first batch, whose features are kept, not recomputed
                head, *seen = find_head(model, prepared.inputs)
            if grad_sum is None:
                label = check_head(model, head)
                bias = head.bias is not None
                dtype = compute_dtype(head, dtype)
            e, h = head_residuals(model, head, label, batch, dtype, seen, prepared)
            g, f = head_moments(e, h, bias, backend=backend)
            grad_sum = g if grad_sum is None else grad_sum + g
            fisher_sum = f if fisher_sum is None else fisher_sum + f
            cache.offer((e, h), (e.numel() + h.numel()) * e.element_size())
            n += batch.size
            bar.update(batch.size)
    if sharded:
        grad_sum, fisher_sum = distributed.reduce_sums({"grad": grad_sum, "fisher": fisher_sum}).values()
        n = distributed.reduce_count(n)
    with preserved_modes(model), distributed.together("the scoring pass over the forget set", sharded):
        model.eval()
        m, fisher, mean_grad = damped_ratio({label: grad_sum}, {label: fisher_sum}, n, damping)
        items = cache.replay(forget, lambda batch: head_residuals(model, head, label, batch, dtype))
        scores = torch.cat([head_influence(e, h, m[label], bias, backend=backend).cpu() for e, h in items])
    bar.close()
    if sharded:
        scores = distributed.gather_rows(scores)
    return InfluenceResult(scores=scores, indices=whole.indices.clone(), fisher=fisher[label].cpu(),
                           mean_grad=mean_grad[label].cpu(), head=label, backend=resolve_backend(backend, device),
                           damping=damping, seconds=time.perf_counter() - started)
