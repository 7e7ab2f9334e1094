"""NPO's loss for one batch of a host's training loop (the same loss as ``imu_fast.npo_loss``).

The reference model enters only through log pi_ref(y_i|x_i) of the forget samples, so those are
computed once before training, in eval mode, and looked up by dataset index.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import checks
from ..forget_set import ForgetBatch, ForgetSet, sample_losses
from ..methods.npo import npo_loss
from ..model_io import model_device
from ..modes import preserved_modes


class NPOObjective:
    theta = None  # NPO needs no influence parameters

    def __init__(self, loss_fn, beta: float):
        self.loss_fn = loss_fn
        self.beta = checks.real("beta", beta, low=0, low_open=True, where="NPO")
        self.reference: torch.Tensor | None = None
        self.prepared = False

    @torch.no_grad()
    def prepare(self, model: nn.Module, forget: ForgetSet) -> None:
        device = model_device(model)
        with preserved_modes(model):
            model.eval()
            self.reference = torch.cat([-sample_losses(model, b, self.loss_fn, device).losses.float().cpu()
                                        for b in forget.batches()])
        self.prepared = True

    def kept_rows(self):
        return None  # every forget sample is trained on

    def loss(self, model: nn.Module, scoring_model: nn.Module, batch: ForgetBatch, finite: bool):
        losses = sample_losses(model, batch, self.loss_fn, model_device(scoring_model), finite=finite).losses
        if batch.indices.numel() and int(batch.indices.max()) >= self.reference.numel():
            raise IndexError(f"forget-set index {int(batch.indices.max())} is beyond the {self.reference.numel()} "
                             "samples the reference log-probabilities were computed for")
        ref = self.reference[batch.indices].to(losses.device)
        return npo_loss(-losses, ref, self.beta), losses, None
