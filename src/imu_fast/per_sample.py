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
from .capture.capture import InPlaceOutput
from .forget_data import model_device
from .modes import preserved_modes


def per_layer_terms(model: nn.Module, loss_fn, batch, targets) -> tuple[dict[str, object], int]:
    """``({parameter name: term}, batch size)`` from one forward/backward with capture hooks."""
    check_samples_independent(model)
    batch = to_device(batch, model_device(model))
    loss_fn = loss_fn or classification_losses
    for copy_outputs in (False, True):  # a second pass only if an output was rewritten in place
        try:
            with torch.enable_grad(), LayerCapture(targets, copy_outputs=copy_outputs) as capture:
                losses = check_losses(loss_fn(model, batch), "loss_fn output")
                capture.backward(losses)
            return capture.terms(), losses.shape[0]
        except InPlaceOutput:
            continue
    raise AssertionError("unreachable: copied outputs cannot be modified in place")


def per_sample_grad_norms(model: nn.Module, loss_fn, batch, *, params=None, backend: str = "auto",
                          route: str = "auto", per_layer: bool = False):
    """L2 norm of each sample's gradient over ``params`` (default: every trainable parameter).

    Returns a length-B tensor, or ``(norms, {parameter name: norms})`` with ``per_layer=True``.
    ``route`` picks the Gram (T^2) or tiled (d_in d_out) computation for weight matrices; ``auto``
    takes the cheaper per layer. Samples must not interact: BatchNorm in train mode is refused.
    """
    targets = select_targets(model, params)
    with preserved_modes(model):
        terms, _ = per_layer_terms(model, loss_fn, batch, targets)
    squares = {name: term.norm_sq(backend, route) for name, term in terms.items()}
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
    if isinstance(data, (list, tuple)) and data and not isinstance(data[0], torch.Tensor):
        return data  # a list of ready batches
    return [data]  # one batch


def fisher_diagonal(model: nn.Module, loss_fn, data, *, params=None, backend: str = "auto",
                    batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal sum_i g_i^2 / N per selected parameter (no damping added).

    ``data`` is a DataLoader, a Dataset, a list of batches or one batch. The fused kernels square
    each tile of B_i^T A_i on chip, so memory stays at the size of the activations.
    """
    targets = select_targets(model, params)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    with preserved_modes(model):
        for batch in _batches(data, batch_size):
            terms, size = per_layer_terms(model, loss_fn, batch, targets)
            for name, term in terms.items():
                f = term.fisher_sum(backend)
                sums[name] = f if name not in sums else sums[name] + f
            n += size
    if n == 0:
        raise ValueError("fisher_diagonal got no samples")
    return {name: s / n for name, s in sums.items()}
