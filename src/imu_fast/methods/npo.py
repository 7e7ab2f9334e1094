"""NPO: negative preference optimisation on the forget set (Zhang et al. 2024), with the correct sign.

    L = (2/β) · mean_i log(1 + (π_θ(y_i|x_i) / π_ref(y_i|x_i))^β)
      = −(2/β) · mean_i log σ(−β · (log π_θ(y_i|x_i) − log π_ref(y_i|x_i)))

π_ref is the model before unlearning, frozen. L grows with the forget likelihood π_θ(y_i|x_i),
so minimising it *lowers* that likelihood. ∂L_i/∂log π_θ = 2·σ(β·Δ_i)/N with Δ_i the log ratio:
at θ = θ_ref this is GA's gradient, and it fades for samples already forgotten (Δ_i ≪ 0), which
is why NPO diverges more slowly than GA. (The IMU authors' NPO baseline has this sign reversed;
see IMU_SPEC section 3.)

π_ref only enters through log π_ref(y_i|x_i) of the forget samples, so those N numbers are
computed once, before epoch 0, in eval mode (a frozen copy is deterministic: no dropout, BatchNorm
on running statistics), instead of keeping a second model in memory.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..config import UnlearnConfig
from ..forget_data import iterate_batches, model_device
from ..head import logits_of
from ..modes import preserved_modes
from ..report import UnlearnReport
from ._descent import check_labels_in, dataset_of, run_descent, trained_parameters


def npo_loss(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """−(2/β) · mean_i log σ(−β · (log_prob_i − ref_log_prob_i)); increasing in every ``log_prob_i``."""
    if log_prob.dim() != 1 or log_prob.shape != ref_log_prob.shape:
        raise ValueError(f"need two 1-D tensors of the same shape, got {tuple(log_prob.shape)} and "
                         f"{tuple(ref_log_prob.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    log_ratio = log_prob - ref_log_prob.to(log_prob.dtype)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()  # logsigmoid: stable for any ratio


def true_log_probs(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[i, y_i], in at least float32 (half-precision log-probabilities are coarse)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits.log_softmax(dim=1).gather(1, y[:, None]).squeeze(1)


@torch.no_grad()
def reference_log_probs(model: nn.Module, dataset, batch_size: int) -> torch.Tensor:
    """log π(y_i|x_i) of every sample of ``dataset`` under ``model`` as it is now, in eval mode."""
    device = model_device(model)
    out = []
    with preserved_modes(model):
        model.eval()
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for start, x, y in iterate_batches(loader, model, device):
            logits = logits_of(model(x))
            check_labels_in(y, torch.arange(start, start + len(y)), logits.shape[1], "forget")
            out.append(true_log_probs(logits, y))
    return torch.cat(out)


def run_npo(model: nn.Module, forget, head: nn.Module | None, cfg: UnlearnConfig, method: str = "npo") -> UnlearnReport:
    """Minimises the NPO loss over the forget set with SGD (``cfg``'s settings; β = ``cfg.npo_beta``)."""
    dataset = dataset_of(forget, "forget")
    n = len(dataset)
    report = UnlearnReport(method=method, config=dict(vars(cfg)), n_forget=n, n_kept=n)
    started = time.perf_counter()
    ref = reference_log_probs(model, dataset, cfg.batch_size)
    report.update_seconds += time.perf_counter() - started  # part of the run's cost (RTE)

    def step(logits, y, idx):
        log_prob = true_log_probs(logits, y)
        return npo_loss(log_prob, ref[idx], cfg.npo_beta), -log_prob

    return run_descent(model, dataset, trained_parameters(model, head, cfg), cfg, report, step, "forget")
