"""Influence through gradient sketches (``influence_scores(..., sketch=SketchConfig(...))``).

Pass 1 sketches every batch (``imu_fast.sketch``: Kronecker blocks for linear-family weights,
on-the-fly JL for the rest, or JL for everything) and accumulates the sketch moments; the rows
are kept for pass 2 while they fit in ``memory_budget`` bytes (N x K values, far fewer than the
terms the diagonal route keeps), the rest are sketched again. The damped solve runs in sketch
space (``sketch_solve``). Without ``targets`` the influence parameters are the classifier head
(found as the head route finds it, or ``head=``), captured like any other layer.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import Selection, select_targets
from ..capture.head import check_head, find_head
from ..dispatch import resolve_backend
from ..forget_set import ForgetBatch, ForgetSet, prepare_classification
from ..model_io import model_device
from ..modes import preserved_modes
from ..sketch.api import SketchPass
from ..sketch.config import SketchConfig
from ..sketch.moments import SketchMoments
from .cache import BudgetCache
from .result import InfluenceResult
from .sketch_solve import scores_of, solve


def _default_targets(model: nn.Module, forget: ForgetSet, head: nn.Module | None) -> list[nn.Module]:
    if head is not None:
        check_head(model, head)
        return [head]
    first = next(forget.batches())
    prepared = prepare_classification(model, first, model_device(model), "forget")
    return [find_head(model, prepared.inputs)[0]]


def sketch_influence_scores(model: nn.Module, forget: ForgetSet, *, sketch: SketchConfig, targets, head, loss_fn,
                            damping: float, backend: str, memory_budget: int, progress: bool) -> InfluenceResult:
    if not isinstance(sketch, SketchConfig):
        raise TypeError(f"sketch must be an imu_fast.SketchConfig, got {type(sketch).__name__} (to score saved "
                        "sketches, call imu_fast.sketch_influence on the SketchSet)")
    started = time.perf_counter()
    cache = BudgetCache(memory_budget)
    bar = tqdm(total=forget.size, desc="influence (sketch)", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model):
        model.eval()
        if targets is None:
            targets = _default_targets(model, forget, head)
        selection = select_targets(model, targets)
        resolved = resolve_backend(backend, model_device(model))
        sketch_pass = SketchPass(model, selection, loss_fn, sketch, backend)
        moments = None
        for batch in forget.batches():
            rows = sketch_pass.rows(batch, what="forget")
            if moments is None:
                moments = SketchMoments(sketch_pass.layout, sketch.fisher, sketch.blocks)
            moments.update(rows)
            cache.offer(rows, rows.numel() * rows.element_size())
            bar.update(batch.size)
        v, fisher, means = solve(moments, damping)
        scores = torch.cat([scores_of(rows, v) for rows in cache.replay(forget, lambda b: sketch_pass.rows(b, "forget"))])
    bar.close()
    return InfluenceResult(scores=scores, indices=forget.indices.clone(), fisher=fisher, mean_grad=means,
                           head=", ".join(selection.names()), backend=resolved, damping=damping,
                           seconds=time.perf_counter() - started)


def batch_sketch_influence(model: nn.Module, selection: Selection, batch: ForgetBatch, loss_fn, *,
                           sketch: SketchConfig, damping: float, backend: str, verify: bool = False) -> torch.Tensor:
    """Sketch-space scores of one batch from that batch alone (the dynamic refresh); the caller
    sets eval mode."""
    sketch_pass = SketchPass(model, selection, loss_fn, sketch, backend)
    sketch_pass._verified = not verify
    rows = sketch_pass.rows(batch, what="forget")
    moments = SketchMoments(sketch_pass.layout, sketch.fisher, sketch.blocks)
    moments.update(rows)
    v, _, _ = solve(moments, damping)
    return scores_of(rows, v)
