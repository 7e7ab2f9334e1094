"""Influence scores over any set of supported layers (``influence_scores(..., targets=...)``).

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

from .backends import resolve_backend
from .capture import select_targets
from .forget_data import forget_size, model_device, ordered_loader
from .modes import preserved_modes
from .per_sample import _accumulate, per_layer_terms, stream_terms


def _damped_ratio(grad_sums: dict, fisher_sums: dict, n: int, damping: float):
    fisher = {k: f / n + damping for k, f in fisher_sums.items()}
    mean_grad = {k: g / n for k, g in grad_sums.items()}
    for name, f in fisher.items():
        if not torch.isfinite(f).all() or (f <= 0).any():
            raise FloatingPointError(
                f"the Fisher diagonal of {name!r} is not finite and positive; use damping > 0 and check the losses"
            )
    return {k: mean_grad[k] / fisher[k] for k in fisher}, fisher, mean_grad


def layer_influence_scores(model: nn.Module, forget, *, targets, loss_fn, damping: float, batch_size: int,
                           backend: str, memory_budget: int, progress: bool):
    from .influence import InfluenceResult

    selected = select_targets(model, targets)
    loader = ordered_loader(forget, batch_size)
    started = time.perf_counter()
    grad_sums: dict[str, torch.Tensor] = {}
    fisher_sums: dict[str, torch.Tensor] = {}
    cache: list[dict | None] = []
    cached_bytes, n = 0, 0
    bar = tqdm(total=forget_size(forget), desc="influence", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model):
        model.eval()
        for batch in loader:
            terms: dict | None = {} if cached_bytes < memory_budget else None

            def pass_one(name, term, terms=terms):
                _accumulate(fisher_sums, name, term.fisher_sum(backend))
                _accumulate(grad_sums, name, term.grad_sum())
                if terms is not None:
                    terms[name] = term

            size = stream_terms(model, loss_fn, batch, selected, pass_one)
            nbytes = sum(term.nbytes() for term in terms.values()) if terms is not None else 0
            keep = terms is not None and cached_bytes + nbytes <= memory_budget
            cache.append(terms if keep else None)
            cached_bytes += nbytes if keep else 0
            n += size
            bar.update(size)
        if n == 0:
            raise ValueError("the forget set is empty: there is nothing to unlearn")
        m, fisher, mean_grad = _damped_ratio(grad_sums, fisher_sums, n, damping)

        def batch_scores(item, batch):
            if item is not None:
                return -sum(term.dot(m[name]) for name, term in item.items())
            dots: list[torch.Tensor] = []
            stream_terms(model, loss_fn, batch, selected, lambda name, term: dots.append(term.dot(m[name])))
            return -sum(dots)

        batches = iter(loader) if any(item is None for item in cache) else None
        scores = []
        for item in cache:
            batch = next(batches) if batches is not None else None
            scores.append(batch_scores(item, batch).detach().cpu())
        bar.close()
    scores = torch.cat(scores)
    if scores.numel() != n:
        raise RuntimeError(f"the forget set yielded {n} samples on the first pass and {scores.numel()} on the second")
    return InfluenceResult(
        scores=scores,
        fisher={k: v.cpu() for k, v in fisher.items()},
        mean_grad={k: v.cpu() for k, v in mean_grad.items()},
        head=", ".join(sorted(fisher)),
        backend=resolve_backend(backend, model_device(model)),
        damping=damping,
        seconds=time.perf_counter() - started,
    )


def batch_layer_influence(model: nn.Module, loss_fn, batch, targets, *, damping: float, backend: str) -> torch.Tensor:
    """Scores of one batch from that batch alone (the dynamic refresh), for target layers.

    The caller puts the model in eval mode."""
    selected = select_targets(model, targets)
    terms, n = per_layer_terms(model, loss_fn, batch, selected)
    fisher = {name: term.fisher_sum(backend) for name, term in terms.items()}
    grads = {name: term.grad_sum() for name, term in terms.items()}
    m, _, _ = _damped_ratio(grads, fisher, n, damping)
    return -sum(term.dot(m[name]) for name, term in terms.items())
