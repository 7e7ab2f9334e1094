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

from .. import distributed
from ..config import UnlearnConfig
from ..forget_set import ForgetSet, local_share, sample_losses
from ..model_io import model_device
from ..modes import preserved_modes
from ..report import UnlearnReport
from ._descent import run_descent
from .loop import RunControl


def npo_loss(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """−(2/β) · mean_i log σ(−β · (log_prob_i − ref_log_prob_i)); increasing in every ``log_prob_i``."""
    if log_prob.dim() != 1 or log_prob.shape != ref_log_prob.shape:
        raise ValueError(f"need two 1-D tensors of the same shape, got {tuple(log_prob.shape)} and "
                         f"{tuple(ref_log_prob.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    log_ratio = log_prob - ref_log_prob.to(log_prob.dtype)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()  # logsigmoid: stable for any ratio


@torch.no_grad()
def reference_log_probs(model: nn.Module, forget: ForgetSet, loss_fn=None) -> torch.Tensor:
    """log π(y_i|x_i) = −l_i of every forget sample under ``model`` as it is now, in eval mode, in
    the forget set's order (each process of a group computes its share; all get the whole)."""
    device = model_device(model)
    share = local_share(forget)
    with preserved_modes(model), distributed.together("NPO's reference pass", share is not forget):
        model.eval()
        ref = torch.cat([-sample_losses(model, batch, loss_fn, device).losses for batch in share.batches()])
    return distributed.gather_rows(ref) if share is not forget else ref


def run_npo(model: nn.Module, forget: ForgetSet, trained: list[nn.Parameter], cfg: UnlearnConfig,
            report: UnlearnReport, loss_fn=None, control: RunControl | None = None) -> UnlearnReport:
    """Minimises the NPO loss over the forget set (``cfg``'s optimiser; β = ``cfg.npo_beta``).

    log π_θ(y_i|x_i) is minus the per-sample loss: the cross-entropy for classifiers, or
    ``loss_fn`` (e.g. a sequence's mean token loss for language models).
    """
    state: dict[str, torch.Tensor] = {}

    def start():
        started = time.perf_counter()
        state["reference"] = reference_log_probs(model, forget, loss_fn)
        report.update_seconds += time.perf_counter() - started  # part of the run's cost (RTE)

    def step(out, batch):
        ref = state["reference"]
        return npo_loss(-out.losses, ref[batch.positions.to(ref.device)], cfg.npo_beta), out.losses

    return run_descent(model, forget, trained, cfg, report, step, loss_fn, control, start, state)
