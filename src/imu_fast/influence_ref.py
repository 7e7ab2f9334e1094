"""The slow, obvious oracle: per-sample gradients by batch-of-one autograd (IMU_SPEC.md section 1).

Structured like the authors' reference loop (one pass for the Fisher diagonal, a second pass that
stacks the N x P per-sample gradient matrix for the mean gradient and the scores), but every
sample is scored with its own gradient. It is the correctness oracle for the fast path and the
baseline in benchmarks; it is never used by the fast path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .forget_data import as_dataset, model_device
from .head import logits_of
from .modes import preserved_modes


def _per_sample_grad(model, params, x, y) -> torch.Tensor:
    loss = F.cross_entropy(logits_of(model(x.unsqueeze(0))), y.view(1))
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def influence_scores_ref(model: nn.Module, forget, params: list[torch.Tensor], *, damping: float = 0.01) -> torch.Tensor:
    """Scores I_i = -g_i . (mean g / (mean g^2 + damping)) from batch-of-one autograd, eval mode."""
    dataset = as_dataset(forget)
    device = model_device(model)
    n = len(dataset)
    with preserved_modes(model):
        model.eval()
        fisher = None
        for i in range(n):
            x, y = dataset[i]
            g = _per_sample_grad(model, params, x.to(device), torch.as_tensor(y, device=device))
            fisher = g * g if fisher is None else fisher + g * g
        fisher = fisher / n + damping
        rows = []
        for i in range(n):
            x, y = dataset[i]
            rows.append(_per_sample_grad(model, params, x.to(device), torch.as_tensor(y, device=device)))
        grads = torch.stack(rows)  # N x P: affordable only for the oracle
    mean_grad = grads.mean(dim=0)
    return -(grads @ (mean_grad / fisher)).detach().cpu()
