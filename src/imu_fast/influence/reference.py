"""The slow, obvious oracle: per-sample gradients by batch-of-one autograd (IMU_SPEC.md section 1).

Structured like the authors' reference loop (one pass for the Fisher diagonal, a second pass that
stacks the N x P per-sample gradient matrix for the mean gradient and the scores), but every
sample is scored with its own gradient. It reads the forget set through the same pipeline as the
fast path (so every accepted form works, in the same order) and is never used by the fast path.
"""

from __future__ import annotations

import torch
from torch import nn

from ..forget_set import as_forget_set, sample_losses
from ..model_io import model_device
from ..modes import preserved_modes


def _per_sample_grad(model, params, batch, loss_fn, device) -> torch.Tensor:
    loss = sample_losses(model, batch, loss_fn, device).losses[0]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def influence_scores_ref(model: nn.Module, forget, params: list[torch.Tensor], *, damping: float = 0.01,
                         loss_fn=None) -> torch.Tensor:
    """Scores I_i = -g_i . (mean g / (mean g^2 + damping)) from batch-of-one autograd, eval mode,
    in ascending dataset-index order."""
    forget = as_forget_set(forget, batch_size=1)
    device = model_device(model)
    with preserved_modes(model), torch.enable_grad():
        model.eval()
        for p in params:
            p.requires_grad_(True)  # frozen parameters too (preserved_modes restores the flags)
        fisher, n = None, 0
        for batch in forget.batches(1):
            g = _per_sample_grad(model, params, batch, loss_fn, device)
            fisher = g * g if fisher is None else fisher + g * g
            n += 1
        fisher = fisher / n + damping
        rows = [_per_sample_grad(model, params, batch, loss_fn, device) for batch in forget.batches(1)]
        grads = torch.stack(rows)  # N x P: affordable only for the oracle
    mean_grad = grads.mean(dim=0)
    return -(grads @ (mean_grad / fisher)).detach().cpu()
