"""The weighted gradient-ascent objective shared by IMU, its uniform ablation and plain GA (IMU_SPEC 3).

Per mini-batch B of kept samples: L = -sum w_i l_i / sum w_i + alpha ||theta_c||_1, run by the
common loop (``methods.loop``). Weights come from the influence scores through theta_c (once,
every epoch, or per batch for the dynamic variant) or are uniform. l_i is the cross-entropy of a
classifier, or the user's per-sample ``loss_fn`` (e.g. a sequence's mean token loss).

Split over processes, a share's loss is -sum_{share} w_i l_i / sum_B w_i + alpha ||theta_c||_1 / P:
the shares add up to L, and so do their gradients.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .. import distributed
from ..config import UnlearnConfig
from ..forget_set import ForgetSet, sample_losses
from ..losses import imu_loss
from ..model_io import model_device
from ..report import UnlearnReport
from ..weights import dynamic_batch_weights, influence_weights
from .common import train_mode
from .influence_params import InfluenceParams
from .loop import BatchLoss, BatchPart, Objective, RunControl, run_loop


class WeightedAscent(Objective):
    empty_message = "no sample has a negative influence score: nothing was unlearned"

    def __init__(self, model: nn.Module, forget: ForgetSet, theta: InfluenceParams | None, cfg: UnlearnConfig,
                 report: UnlearnReport, loss_fn=None):
        self.model, self.data, self.theta, self.cfg, self.report, self.loss_fn = model, forget, theta, cfg, report, loss_fn
        self.device = model_device(model)
        self.l1_params = theta.parameters(model) if theta is not None else []
        self.weights: torch.Tensor | None = None  # over the forget set's positions; None: uniform over all
        self.weights_epoch = -1  # the epoch they were computed for (-1: not yet)

    def _influence_weights(self) -> torch.Tensor:
        started = time.perf_counter()
        scores = self.theta.scores(self.model, self.data, self.cfg)
        weights = influence_weights(scores, top_fraction=self.cfg.top_fraction, clip_quantile=self.cfg.clip_quantile)
        self.report.influence_seconds += time.perf_counter() - started
        if self.weights_epoch < 0:
            self.report.weights, self.report.scores = weights, scores
            self.report.n_kept = int((weights > 0).sum())
        return weights

    def start(self) -> None:
        if self.cfg.weighting == "uniform" or self.cfg.refresh == "batch":
            self.report.n_kept = self.data.size or 0  # every sample is visited

    def epoch_positions(self, epoch: int) -> torch.Tensor | None:
        if self.cfg.weighting == "uniform" or self.cfg.refresh == "batch":
            return None
        if self.weights_epoch < 0 or (self.cfg.refresh == "epoch" and self.weights_epoch != epoch):
            self.weights = self._influence_weights()
            self.weights_epoch = epoch
        return (self.weights > 0).nonzero().flatten()

    def _batch_weights(self, part: BatchPart) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(this share's weights, the whole batch's), or None to skip the batch."""
        batch = part.batch
        if self.cfg.refresh == "batch":
            started = time.perf_counter()
            whole = dynamic_batch_weights(self.theta.batch_scores(self.model, batch, self.cfg, part.across_processes))
            self.report.influence_seconds += time.perf_counter() - started
            if whole.sum() <= 0:
                return None  # nothing in this batch supports the forget loss
            if not part.across_processes:
                return whole, whole
            return whole[distributed.share(whole.numel())], whole
        if self.weights is None:
            return torch.ones(batch.size, dtype=torch.float64), torch.ones(part.positions.numel(), dtype=torch.float64)
        return self.weights[batch.positions], self.weights[part.positions]

    def batch_loss(self, part: BatchPart) -> BatchLoss | None:
        weights = self._batch_weights(part)
        if weights is None:
            return None
        w, whole = weights
        train_mode(self.model, self.cfg.freeze_batchnorm)  # batch scores left the model in eval mode
        if not part.across_processes:
            losses = sample_losses(self.model, part.batch, self.loss_fn, self.device, finite=part.first).losses
            return BatchLoss(imu_loss(losses, w.to(self.device), l1_params=self.l1_params, alpha=self.cfg.alpha), losses)
        l1 = self.cfg.alpha * sum(p.abs().sum() for p in self.l1_params) / distributed.world_size() \
            if self.cfg.alpha and self.l1_params else None
        if not part.batch.size:  # this process's share is empty; it still reports (no) forget losses
            return BatchLoss(l1, torch.zeros(0))
        losses = sample_losses(self.model, part.batch, self.loss_fn, self.device, finite=part.first).losses
        data_term = -(w.to(self.device, losses.dtype) * losses).sum() / whole.sum().to(self.device, losses.dtype)
        return BatchLoss(data_term if l1 is None else data_term + l1, losses)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"weights_epoch": torch.tensor(self.weights_epoch)}
        if self.weights is not None:
            state["weights"] = self.weights
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights_epoch = int(state["weights_epoch"])
        self.weights = state.get("weights")


def run_weighted_ascent(model: nn.Module, forget: ForgetSet, theta: InfluenceParams | None, trained: list,
                        cfg: UnlearnConfig, report: UnlearnReport, loss_fn=None,
                        control: RunControl | None = None) -> UnlearnReport:
    """``theta`` (the influence parameters) may be None only for uniform weights, scope 'all', alpha 0."""
    run_loop(model, WeightedAscent(model, forget, theta, cfg, report, loss_fn), trained, cfg, report, control)
    if report.weights is None and forget.size is not None and cfg.refresh != "batch":
        report.weights = torch.ones(len(forget), dtype=torch.float64)  # uniform: every sample, weight 1
        report.n_kept = len(forget)
    return report
