"""The float64 per-sample oracle for tests: one autograd call per sample, on batches of one.

Independent of the package's data pipeline: each test hands it the list of single-sample batches
it means, in the order the package promises (ascending dataset index).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def classification_loss(model, batch) -> torch.Tensor:
    """Cross-entropy of one (x, y) pair or one dict batch with "labels" (batch dimension 1)."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = model(**inputs)
        labels = batch["labels"]
    else:
        x, labels = batch
        out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return F.cross_entropy(logits, labels.reshape(1).long())


def per_sample_grads(model, batches, params, loss=classification_loss) -> torch.Tensor:
    """(N, P): the gradient of each batch-of-one's loss over ``params`` (frozen ones included)."""
    flags = [p.requires_grad for p in params]
    training = model.training
    model.eval()
    rows = []
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in batches:
            grads = torch.autograd.grad(loss(model, batch), params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]))
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(training)
    return torch.stack(rows)


def influence(grads: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
    """I_i = -g_i . (mean g / (mean g^2 + damping))."""
    fisher = (grads * grads).mean(0) + damping
    return -(grads @ (grads.mean(0) / fisher))


def one(sample):
    """A batch of one from one sample (dict of tensors or tuple), without the pipeline's collate."""
    if isinstance(sample, dict):
        return {k: v[None] for k, v in sample.items()}
    return tuple(t[None] if isinstance(t, torch.Tensor) else torch.tensor([t]) for t in sample)
