"""Influence scores for a classifier head: the exact fast path (IMU_SPEC.md sections 1 and 4).

One eval-mode forward pass over the forget set captures each sample's head input h_i and logits
z_i. From e_i = softmax(z_i) - onehot(y_i) the head's per-sample gradient is e_i h~_i^T, so

    F = (E*E)^T (H~*H~) / N + damping,   G = E^T H~ / N,   M = G / F,   I_i = -e_i^T M h~_i

are computed by the head_moments and head_influence ops; no per-sample gradient, and no N x P
matrix, ever exists. E and H (O(N (C + D)) memory) are cached up to ``memory_budget`` bytes;
batches beyond it are recomputed by a second forward pass, so memory stays bounded for any N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .backends import resolve_backend
from .forget_data import check_finite, check_labels, forget_size, iterate_batches, model_device, ordered_loader
from .head import capture, check_head, find_head_and_features, logits_of, module_name
from .modes import preserved_modes
from .ops import head_influence, head_moments

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of cached head inputs and residuals


@dataclass
class InfluenceResult:
    """Scores in the forget set's order, with the statistics they came from."""

    scores: torch.Tensor  # (N,) on CPU
    fisher: torch.Tensor | dict  # head: (C, W) damped Fisher diagonal, W = D + bias; targets: per parameter
    mean_grad: torch.Tensor | dict  # the mean forget gradient, in the same form
    head: str  # the head module's name, or the target parameter names
    backend: str
    damping: float
    seconds: float

    @property
    def n(self) -> int:
        return self.scores.numel()


def compute_dtype(head: nn.Linear, dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype or head.weight.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32  # half inputs accumulate in float32
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    return dtype


def head_features(model: nn.Module, head: nn.Linear, x: torch.Tensor, y: torch.Tensor, start: int,
                  dtype: torch.dtype, seen: tuple[torch.Tensor, torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, H)`` for one batch: softmax residuals and head inputs, validated, in ``dtype``.
    ``seen`` = (head input, logits) of a forward pass already run on this batch."""
    if seen is None:
        with capture(head) as rec, torch.no_grad():
            logits = logits_of(model(x))
        if rec.outputs is not logits:
            raise ValueError(
                f"the head {type(head).__name__} did not produce the model's output; the fast path needs "
                "logits = head(features) returned unchanged"
            )
        h = rec.inputs
    else:
        h, logits = seen
    if h.dim() != 2:
        raise ValueError(
            f"the head's input has shape {tuple(h.shape)}; the head path needs one feature vector per sample "
            "(batch x features). Layers with token axes are handled through targets="
        )
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"the model returned {logits.shape[0]} rows of logits for {y.shape[0]} labels (batch at sample {start})")
    check_labels(y, logits.shape[1], start)
    check_finite(logits, "logits", start)
    check_finite(h, "head inputs", start)
    e = torch.softmax(logits.to(dtype), dim=1)
    e[torch.arange(e.shape[0], device=e.device), y] -= 1
    return e, h.to(dtype)


def influence_from_moments(grad_sum, fisher_sum, n: int, damping: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(M, F, G)``: M = G / F with F the damped Fisher diagonal and G the mean gradient."""
    fisher = fisher_sum / n + damping
    mean_grad = grad_sum / n
    if not torch.isfinite(fisher).all() or (fisher <= 0).any():
        raise FloatingPointError(
            "the Fisher diagonal is not finite and positive; use damping > 0 and check the model's outputs"
        )
    return mean_grad / fisher, fisher, mean_grad


def batch_influence(model, head, x, y, *, damping: float, backend: str, dtype) -> torch.Tensor:
    """Scores of one batch computed from that batch alone (the 'dynamic' refresh of IMU_SPEC 3)."""
    bias = head.bias is not None
    e, h = head_features(model, head, x, y, 0, dtype)
    g, f = head_moments(e, h, bias, backend=backend)
    m, _, _ = influence_from_moments(g, f, e.shape[0], damping)
    return head_influence(e, h, m, bias, backend=backend)


def _check_args(damping: float, batch_size: int, memory_budget: int) -> None:
    if not (damping >= 0 and damping < float("inf")):
        raise ValueError(f"damping must be a finite number >= 0, got {damping}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if memory_budget < 0:
        raise ValueError(f"memory_budget must be >= 0 bytes, got {memory_budget}")


def influence_scores(
    model: nn.Module,
    forget,
    *,
    head: nn.Module | None = None,
    damping: float = 0.01,
    batch_size: int = 256,
    backend: str = "auto",
    dtype: torch.dtype | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
    targets=None,
    loss_fn=None,
) -> InfluenceResult:
    """Influence I_i of every forget sample on the mean forget loss.

    ``forget`` is a map-style Dataset of ``(x, y)``, a DataLoader over one (shuffling is undone), or
    a pair of tensors. The model is run in eval mode (BatchNorm running statistics, no dropout)
    and its modes are restored afterwards.

    By default the influence parameters are the classifier head: ``head=None`` finds the
    ``nn.Linear`` whose output is the model's logits, and the exact closed form needs one forward
    pass and no backward. ``dtype`` is then the accumulation dtype (default: the head's, at least
    float32). With ``targets`` (parameter names, parameters or modules of supported layers) the
    influence parameters are those instead, and ``loss_fn(model, batch)`` gives the per-sample
    losses (default: cross-entropy on ``(x, y)``; ``imu_fast.lm.causal_lm_losses`` for language
    models); ``fisher`` and ``mean_grad`` are then dicts keyed by parameter name.
    """
    _check_args(damping, batch_size, memory_budget)
    if targets is not None:
        if head is not None:
            raise ValueError("give either head= (classifier-head path) or targets= (per-layer path), not both")
        from .influence_layers import layer_influence_scores

        return layer_influence_scores(model, forget, targets=targets, loss_fn=loss_fn, damping=damping,
                                      batch_size=batch_size, backend=backend, memory_budget=memory_budget,
                                      progress=progress)
    if loss_fn is not None:
        raise ValueError("loss_fn applies to the per-layer path: pass targets= as well")
    loader = ordered_loader(forget, batch_size)
    device = model_device(model)
    started = time.perf_counter()
    with preserved_modes(model):
        model.eval()
        batches = iterate_batches(loader, model, device)
        total = forget_size(forget)
        bar = tqdm(total=total, desc="influence", unit="sample", disable=not progress, leave=False)
        cache: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        cached_bytes, n = 0, 0
        grad_sum = fisher_sum = None
        for start, x, y in batches:
            seen = None
            if head is None:  # found on the first batch, whose features are kept, not recomputed
                head, *seen = find_head_and_features(model, x)
            if grad_sum is None:
                check_head(head)
                bias = head.bias is not None
                dtype = compute_dtype(head, dtype)
                name = module_name(model, head)
            e, h = head_features(model, head, x, y, start, dtype, seen)
            g, f = head_moments(e, h, bias, backend=backend)
            grad_sum = g if grad_sum is None else grad_sum + g
            fisher_sum = f if fisher_sum is None else fisher_sum + f
            size = (e.numel() + h.numel()) * e.element_size()
            if cached_bytes + size <= memory_budget:
                cache.append((e, h))
                cached_bytes += size
            else:
                cache.append(None)
            n += e.shape[0]
            bar.update(e.shape[0])
        m, fisher, mean_grad = influence_from_moments(grad_sum, fisher_sum, n, damping)

        def features():
            if all(item is not None for item in cache):
                yield from cache
                return
            for item, (start, x, y) in zip(cache, iterate_batches(loader, model, device)):
                yield item if item is not None else head_features(model, head, x, y, start, dtype)

        scores = torch.cat([head_influence(e, h, m, bias, backend=backend).cpu() for e, h in features()])
        bar.close()
    if scores.numel() != n:
        raise RuntimeError(f"the forget set yielded {n} samples on the first pass and {scores.numel()} on the second")
    return InfluenceResult(
        scores=scores,
        fisher=fisher.cpu(),
        mean_grad=mean_grad.cpu(),
        head=name,
        backend=resolve_backend(backend, device),
        damping=damping,
        seconds=time.perf_counter() - started,
    )
