"""One capture pass over one batch: the per-sample losses under capture, every term to a callback."""

from __future__ import annotations

from torch import nn

from ..capture import Selection, capture_terms
from ..forget_set import ForgetBatch, sample_losses
from ..model_io import model_device


def batch_terms(model: nn.Module, selection: Selection, batch: ForgetBatch, loss_fn, on_term, *, backend: str,
                verify: bool = False, what: str = "forget") -> None:
    """One forward/backward of ``batch`` under capture; ``on_term(name, term)`` gets every term.
    ``verify`` also checks that the terms add up to the batch gradient (worth it on a first batch)."""
    device = model_device(model)
    capture_terms(model, selection, lambda: sample_losses(model, batch, loss_fn, device, what).losses, batch.size,
                  on_term, backend=backend, verify=verify)
