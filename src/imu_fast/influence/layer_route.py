"""Influence over any set of supported layers (``influence_scores(..., targets=...)``).

Per target parameter p: F_p = sum_i g_i^2 / N + damping, Gbar_p = sum_i g_i / N, M_p = Gbar_p / F_p,
and I_i = -sum_p <g_i, M_p>. Pass 1 accumulates F and Gbar from the per-sample gradient terms of
each batch (fused Fisher kernels; Gbar is the ordinary batch gradient); pass 2 takes the dot
products. The terms of a batch (its layer inputs and output gradients) are kept for pass 2 while
they fit in ``memory_budget`` bytes; batches beyond it are recomputed, so memory stays bounded.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..dispatch import resolve_backend
from ..capture import Selection, select_targets
from ..forget_set import ForgetBatch, ForgetSet, local_share
from ..model_io import model_device
from ..modes import preserved_modes
from ..statistics.batch_pass import batch_terms
from ..statistics.sums import TermSums
from .cache import BudgetCache
from .result import InfluenceResult
from .solve import damped_ratio


def _scores(terms: dict, m: dict) -> torch.Tensor:
    return -sum(term.dot(m[name]) for name, term in terms.items())


def batch_layer_influence(model: nn.Module, selection: Selection, batch: ForgetBatch, loss_fn, *, damping: float,
                          backend: str, verify: bool = False, across_processes: bool = False) -> torch.Tensor:
    """Scores of one batch from that batch alone (the dynamic refresh); the caller sets eval mode.
    ``across_processes``: as for ``batch_head_influence``, the batch is this process's share."""
    terms: dict = {}
    sums = TermSums(backend)
    with distributed.together("the batch's influence", across_processes):
        if batch.size:
            batch_terms(model, selection, batch, loss_fn, lambda name, term: (sums.update(name, term),
                                                                              terms.__setitem__(name, term)),
                        backend=backend, verify=verify)
    sums.add_samples(batch.size)
    if across_processes:
        sums.all_reduce(model_device(model))
    m, _, _ = damped_ratio(sums.grad, sums.fisher, sums.n, damping)
    scores = _scores(terms, m) if terms else next(iter(m.values())).new_zeros(0)
    return distributed.gather_rows(scores.detach()) if across_processes else scores


def layer_influence_scores(model: nn.Module, forget: ForgetSet, *, targets, loss_fn, damping: float, backend: str,
                           memory_budget: int, progress: bool, shard: bool | None = None) -> InfluenceResult:
    """Inside a process group each process reads its block of the forget set; the sums are reduced
    and the scores gathered, so every process gets the one-process result."""
    selection = select_targets(model, targets)
    started = time.perf_counter()
    whole, forget = forget, local_share(forget, shard)
    sharded = forget is not whole
    sums = TermSums(backend)
    cache = BudgetCache(memory_budget)
    bar = tqdm(total=forget.size, desc="influence", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model), distributed.together("the influence pass over the forget set", sharded):
        model.eval()
        for batch in forget.batches():
            kept: dict | None = {} if cache.has_room() else None

            def pass_one(name, term, kept=kept):
                sums.update(name, term)
                if kept is not None:
                    kept[name] = term

            batch_terms(model, selection, batch, loss_fn, pass_one, backend=backend, verify=batch.number == 0)
            cache.offer(kept, sum(term.nbytes() for term in kept.values()) if kept is not None else 0)
            sums.add_samples(batch.size)
            bar.update(batch.size)
    if sharded:
        sums.all_reduce()
    with preserved_modes(model), distributed.together("the scoring pass over the forget set", sharded):
        model.eval()
        m, fisher, mean_grad = damped_ratio(sums.grad, sums.fisher, sums.n, damping)

        def recompute(batch):
            dots: list[torch.Tensor] = []
            batch_terms(model, selection, batch, loss_fn, lambda name, term: dots.append(term.dot(m[name])),
                        backend=backend)
            return -sum(dots)

        scores = torch.cat([(item if isinstance(item, torch.Tensor) else _scores(item, m)).detach().cpu()
                            for item in cache.replay(forget, recompute)])
    bar.close()
    if sharded:
        scores = distributed.gather_rows(scores)
    return InfluenceResult(scores=scores, indices=whole.indices.clone(),
                           fisher={k: v.cpu() for k, v in fisher.items()},
                           mean_grad={k: v.cpu() for k, v in mean_grad.items()}, head=", ".join(selection.names()),
                           backend=resolve_backend(backend, model_device(model)), damping=damping,
                           seconds=time.perf_counter() - started)
