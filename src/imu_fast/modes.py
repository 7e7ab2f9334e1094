"""Saving and restoring the train/eval flags and requires_grad flags a call changes."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def preserved_modes(model: nn.Module):
    """Restores every submodule's ``training`` flag and every parameter's ``requires_grad`` on exit."""
    training = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)
