"""``imu_fast.influence_scores``: the one entry point to both influence routes."""

from __future__ import annotations

import torch
from torch import nn

from .. import checks, distributed
from ..capture import select_targets
from ..capture.head import check_head
from ..dispatch import BACKENDS
from ..forget_set import as_forget_set
from ..causal_lm import output_layer
from ..stages import load_stage, save_stage, stage_exists
from .head_route import head_influence_scores
from .layer_route import layer_influence_scores
from .lm_head_route import lm_head_influence_scores
from .result import InfluenceResult
from .saved import KIND, influence_settings, result_from_stage, result_info, result_tensors
from .sketch_route import sketch_influence_scores

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of first-pass results kept for the second pass


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
    shard: bool | None = None,
    stage=None,
    sketch=None,
) -> InfluenceResult:
    """Influence I_i of every forget sample on the mean forget loss.

    ``forget`` is any form the forget-set pipeline accepts (a map-style dataset, a DataLoader with
    any sampler, an IterableDataset, columns of tensors, dict batches in the Hugging Face
    convention, a list of samples); scores come back in ascending dataset-index order, with
    ``result.indices``. The model is run in eval mode (BatchNorm running statistics, no dropout)
    and its modes are restored afterwards.

    By default the influence parameters are the classifier head: ``head=None`` finds the
    ``nn.Linear`` whose output holds the model's logits, and the exact closed form needs one forward
    pass and no backward. ``head=`` a language model's output layer (``lm.lm_head``) does the same
    for the per-sequence token loss, over vocabulary chunks (never N x T x V logits). ``dtype`` is then the accumulation dtype (default: the head's, at least
    float32). With ``targets`` (parameter names, parameters or modules of supported layers) the
    influence parameters are those instead, and ``loss_fn(model, batch)`` gives the per-sample
    losses (default: cross-entropy on classification batches; ``imu_fast.lm.causal_lm_losses`` for
    language models); ``fisher`` and ``mean_grad`` are then dicts keyed by parameter name.

    With ``sketch=imu_fast.SketchConfig(...)`` the per-sample gradients over the influence
    parameters (``targets``, default the classifier head) are sketched (Kronecker blocks per
    linear layer, or JL) and I_i = -g^_i^T (F^ + damping I)^-1 mean(g^) is solved in sketch space
    with a full, diagonal or identity F^ (``sketch.fisher``); ``fisher`` and ``mean_grad`` are then
    dicts keyed by Fisher block.

    Inside a torch.distributed process group (more than one process) every process reads only its
    block of the forget set (which must be the same on every process), the sums are all-reduced and
    the scores all-gathered: each process gets the one-process result. ``shard=False`` makes each
    process compute over its own data alone. A ``DistributedDataParallel`` wrapper is looked
    through; fully sharded models (FSDP) are refused.

    ``stage`` (a directory) saves the result there, or reloads it when it was computed from the same
    model, forget set and settings; a saved result that differs in any of them is refused with a
    ``StageMismatchError`` naming what differs.
    """
    checks.real("damping", damping, low=0)
    checks.integer("batch_size", batch_size, low=1)
    checks.integer("memory_budget", memory_budget, low=0)
    checks.flag("progress", progress)
    checks.choice("backend", backend, ("auto", *BACKENDS))
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    if shard is not None:
        checks.flag("shard", shard)
    model = distributed.unwrap(model)
    forget = as_forget_set(forget, batch_size=batch_size)
    if sketch is not None and distributed.active() and shard is not False:
        raise ValueError("sketch= inside a process group is not sharded yet: pass shard=False to score each "
                         "process's own data, or sketch with gradient_sketches and score the merged shards")
    if shard is not False:
        distributed.check_same_weights(model, "the model's weights")
    if targets is not None and head is not None:
        raise ValueError("give either head= (classifier-head path) or targets= (per-layer path), not both")
    if sketch is not None:
        if stage is not None:
            raise ValueError("stage= saves exact influence; sketches are saved with "
                             "imu_fast.gradient_sketches(..., out=folder) and scored with sketch_influence")
        return sketch_influence_scores(model, forget, sketch=sketch, targets=targets, head=head, loss_fn=loss_fn,
                                       damping=float(damping), backend=backend, memory_budget=memory_budget,
                                       progress=progress)
    if targets is None and loss_fn is not None:
        raise ValueError("loss_fn applies to the per-layer path: pass targets= as well")

    def compute() -> InfluenceResult:
        if targets is not None:
            return layer_influence_scores(model, forget, targets=targets, loss_fn=loss_fn, damping=float(damping),
                                          backend=backend, memory_budget=memory_budget, progress=progress,
                                          shard=shard)
        if head is not None and head is output_layer(model):  # a language model's vocabulary projection
            return lm_head_influence_scores(model, forget, head=head, damping=float(damping), backend=backend,
                                            memory_budget=memory_budget, progress=progress, shard=shard)
        return head_influence_scores(model, forget, head=head, damping=float(damping), backend=backend, dtype=dtype,
                                     memory_budget=memory_budget, progress=progress, shard=shard)

    if stage is None:
        return compute()
    if shard is False and distributed.active():
        raise ValueError("stage= with shard=False inside a process group would save one process's own data as the "
                         "stage; save stages of the shared forget set (shard left on)")
    settings = influence_settings(head_name=None if head is None else check_head(model, head),
                                  targets=None if targets is None else select_targets(model, targets).names(),
                                  loss_fn=loss_fn, damping=damping, dtype=dtype)
    if stage_exists(stage, KIND):
        return result_from_stage(load_stage(stage, KIND, settings=settings, model=model, forget=forget), float(damping))
    result = compute()
    save_stage(stage, KIND, result_tensors(result), settings=settings, model=model, forget=forget,
               info=result_info(result))
    return result
