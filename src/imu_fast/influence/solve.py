"""The damped solve both routes share: M = mean gradient / (mean squared gradient + damping)."""

from __future__ import annotations

import torch


def damped_ratio(grad_sums: dict[str, torch.Tensor], fisher_sums: dict[str, torch.Tensor], n: int, damping: float
                 ) -> tuple[dict, dict, dict]:
    """``(M, F, Gbar)`` per parameter: F = sum g^2 / n + damping, Gbar = sum g / n, M = Gbar / F.

    F and Gbar are computed in place of the sums (which are spent), so a vocabulary-sized
    parameter costs three tensors of its size, not five."""
    fisher = {k: f.div_(n).add_(damping) for k, f in fisher_sums.items()}
    mean_grad = {k: g.div_(n) for k, g in grad_sums.items()}
    for name, f in fisher.items():
        if not torch.isfinite(f).all() or (f <= 0).any():
            raise FloatingPointError(f"the Fisher diagonal of {name!r} is not finite and positive; use damping > 0 "
                                     "and check the model's outputs")
    return {k: mean_grad[k] / fisher[k] for k in fisher}, fisher, mean_grad
