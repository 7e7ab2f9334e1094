"""Per-sample gradient statistics for any set of supported layers (IMU_SPEC.md section 4).

    per_sample_grad_norms   ||g_i|| over the selected parameters, one batch
    fisher_diagonal         sum_i g_i^2 / N per parameter, over a data set
    per_layer_terms         the underlying per-sample gradient terms of one batch

``loss_fn(model, batch)`` returns the per-sample losses l_i (default: cross-entropy on ``(x, y)``
batches). One batched forward and one backward to the layer outputs give every statistic;
per-sample gradients are never materialised for weight matrices.
"""

from __future__ import annotations

import torch
from torch import nn

from .batches import check_losses, classification_losses, to_device
from .capture import LayerCapture, check_samples_independent, select_targets
from .forget_data import model_device
from .modes import preserved_modes


def stream_terms(model: nn.Module, loss_fn, batch, targets, on_term) -> int:
    """One forward/backward with capture hooks; ``on_term(name, term)`` gets each parameter's
    per-sample gradient term as soon as it is complete. Returns the batch size."""
    check_samples_independent(model)
    batch = to_device(batch, model_device(model))
    with torch.enable_grad(), LayerCapture(targets, on_term) as capture:
        losses = check_losses((loss_fn or classification_losses)(model, batch), "loss_fn output")
        capture.backward(losses)
    return losses.shape[0]


def per_layer_terms(model: nn.Module, loss_fn, batch, targets) -> tuple[dict[str, object], int]:
    """``({parameter name: term}, batch size)``: every term of one batch, kept together."""
    terms: dict[str, object] = {}
    size = stream_terms(model, loss_fn, batch, targets, terms.__setitem__)
    return terms, size


def _accumulate(into: dict, name: str, value: torch.Tensor) -> None:
    into[name] = value if name not in into else into[name] + value


def per_sample_grad_norms(model: nn.Module, loss_fn, batch, *, params=None, backend: str = "auto",
                          route: str = "auto", per_layer: bool = False):
    """L2 norm of each sample's gradient over ``params`` (default: every trainable parameter).

    Returns a length-B tensor, or ``(norms, {parameter name: norms})`` with ``per_layer=True``.
    ``route`` picks the Gram (T^2) or tiled (d_in d_out) computation for weight matrices; ``auto``
    takes the cheaper per layer. Samples must not interact: BatchNorm in train mode is refused.
    """
    targets = select_targets(model, params)
    squares: dict[str, torch.Tensor] = {}
    with preserved_modes(model):
        stream_terms(model, loss_fn, batch, targets,
                     lambda name, term: squares.__setitem__(name, term.norm_sq(backend, route)))
    total = torch.stack(list(squares.values())).sum(0).sqrt()
    if per_layer:
        return total, {name: sq.sqrt() for name, sq in squares.items()}
    return total


def _batches(data, batch_size: int):
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, list):
        return data  # a list of ready batches
    return [data]  # one batch: a tensor, a tuple such as (x, y), or a dict


def fisher_diagonal(model: nn.Module, loss_fn, data, *, params=None, backend: str = "auto",
                    batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal sum_i g_i^2 / N per selected parameter (no damping added).

    ``data`` is a DataLoader, a Dataset, a list of batches, or one batch (a tensor, a tuple such as
    ``(x, y)``, or a dict). The fused kernels square
    each tile of B_i^T A_i on chip, so memory stays at the size of the activations.
    """
    targets = select_targets(model, params)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    with preserved_modes(model):
        for batch in _batches(data, batch_size):
            n += stream_terms(model, loss_fn, batch, targets,
                              lambda name, term: _accumulate(sums, name, term.fisher_sum(backend)))
    if n == 0:
        raise ValueError("fisher_diagonal got no samples")
    return {name: s / n for name, s in sums.items()}
