"""Per-sample gradient statistics for any set of supported layers (IMU_SPEC.md section 4).

    per_sample_grad_norms   ||g_i|| over the selected parameters, for every sample of a data set
    fisher_diagonal         sum_i g_i^2 / N per parameter, over a data set

``data`` is anything the forget-set pipeline accepts (one batch such as ``(x, y)`` is a data set
of that many samples); results follow ascending dataset-index order. ``loss_fn(model, batch)``
returns the per-sample losses l_i (default: cross-entropy on classification batches). One
batched forward and one backward to the layer outputs give every statistic; per-sample gradients
are never materialised for weight matrices. The model's train/eval modes are the caller's (samples
must not interact: BatchNorm in train mode is refused) and are left as they were.

Inside a torch.distributed process group both read only this process's block of the data set (the
same on every process), all-reduce the sums and all-gather the norms, so every process gets the
one-process result; ``shard=False`` computes over each process's own data alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import checks, distributed
from ..dispatch import BACKENDS
from ..capture import select_targets
from ..forget_set import as_forget_set, local_share
from ..stages import function_name, load_stage, save_stage, stage_exists
from ..modes import preserved_modes
from ..ops.outer_norms import ROUTES
from .batch_pass import batch_terms
from .sums import TermSums

FISHER_KIND = "fisher"


def _check(model: nn.Module, backend: str, batch_size: int, shard) -> nn.Module:
    """The validated settings; returns the model (out of a DDP wrapper, the same on every process)."""
    checks.choice("backend", backend, ("auto", *BACKENDS))
    checks.integer("batch_size", batch_size, low=1)
    if shard is not None:
        checks.flag("shard", shard)
    model = distributed.unwrap(model)
    if shard is not False:
        distributed.check_same_weights(model, "the model's weights")
    return model


def per_sample_grad_norms(model: nn.Module, loss_fn, data, *, params=None, backend: str = "auto",
                          route: str = "auto", per_layer: bool = False, batch_size: int = 256,
                          shard: bool | None = None):
    """L2 norm of each sample's gradient over ``params`` (default: every trainable parameter).

    Returns a length-N tensor, or ``(norms, {parameter name: norms})`` with ``per_layer=True``.
    ``route`` picks the Gram (T^2) or tiled (d_in d_out) computation for weight matrices; ``auto``
    takes the cheaper per layer.
    """
    model = _check(model, backend, batch_size, shard)
    checks.choice("route", route, ROUTES)
    checks.flag("per_layer", per_layer)
    whole = as_forget_set(data, batch_size=batch_size, what="data")
    data = local_share(whole, shard)
    selection = select_targets(model, params)
    squares: dict[str, list[torch.Tensor]] = {name: [] for name in selection.names()}
    with preserved_modes(model), distributed.together("the per-sample norms", data is not whole):
        for batch in data.batches():
            batch_terms(model, selection, batch, loss_fn,
                        lambda name, term: squares[name].append(term.norm_sq(backend, route).detach()),
                        backend=backend, verify=batch.number == 0, what="data")
    per_param = {name: torch.cat(parts) for name, parts in squares.items()}
    if data is not whole:
        per_param = {name: distributed.gather_rows(sq) for name, sq in per_param.items()}
    total = torch.stack(list(per_param.values())).sum(0).clamp_min(0).sqrt()
    if per_layer:
        return total, {name: sq.clamp_min(0).sqrt() for name, sq in per_param.items()}
    return total


def fisher_diagonal(model: nn.Module, loss_fn, data, *, params=None, backend: str = "auto",
                    batch_size: int = 64, shard: bool | None = None, stage=None) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal sum_i g_i^2 / N per selected parameter (no damping added).

    The fused kernels square each tile of B_i^T A_i on chip, so memory stays at the size of the
    activations. ``stage`` (a directory) saves the result, or reloads it when computed from the
    same model, data and parameters (``StageMismatchError`` naming what differs otherwise).
    """
    model = _check(model, backend, batch_size, shard)
    whole = as_forget_set(data, batch_size=batch_size, what="data")
    selection = select_targets(model, params)
    settings = {"params": selection.names(), "loss_fn": function_name(loss_fn)}
    if stage is not None and shard is False and distributed.active():
        raise ValueError("stage= with shard=False inside a process group would save one process's own data as the "
                         "stage; save stages of the shared data set (shard left on)")
    if stage is not None and stage_exists(stage, FISHER_KIND):
        return load_stage(stage, FISHER_KIND, settings=settings, model=model, forget=whole).tensors
    data = local_share(whole, shard)
    sums = TermSums(backend, grad=False)
    with preserved_modes(model), distributed.together("the Fisher diagonal", data is not whole):
        for batch in data.batches():
            batch_terms(model, selection, batch, loss_fn, sums.update, backend=backend, verify=batch.number == 0,
                        what="data")
            sums.add_samples(batch.size)
    if data is not whole:
        sums.all_reduce()
    fisher = {name: s / sums.n for name, s in sums.fisher.items()}
    if stage is not None:
        save_stage(stage, FISHER_KIND, fisher, settings=settings, model=model, forget=whole)
    return fisher
