"""IMU's weighted ascent for one batch of a host's training loop (IMU_SPEC sections 2-3).

``Theta`` resolves the influence parameters theta_c once per run (target layers, or a classifier
head found by the first influence pass) and scores a batch from that batch alone (the dynamic
variant); ``IMUObjective`` keeps the weights of a once/epoch refresh by dataset index and turns a
batch into L = -sum w_i l_i / sum w_i + alpha ||theta_c||_1 with ``imu_fast.imu_loss``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..capture import select_targets
from ..forget_set import ForgetBatch, ForgetSet, sample_losses
from ..influence import batch_head_influence, batch_layer_influence, influence_scores
from ..losses import imu_loss
from ..model_io import model_device
from ..modes import preserved_modes
from ..weights import dynamic_batch_weights, influence_weights
from .settings import IMUSettings


def no_autocast(model: nn.Module):
    """Influence passes in the model's own precision, outside the host's mixed-precision autocast."""
    return torch.autocast(device_type=model_device(model).type, enabled=False)


class Theta:
    """The influence parameters: ``targets`` (names, parameters or modules) or, if None, the head."""

    def __init__(self, targets, loss_fn, settings: IMUSettings):
        self.targets, self.loss_fn, self.settings = targets, loss_fn, settings
        self.selection = None
        self.head: nn.Module | None = None
        self._verified = False

    def resolve(self, model: nn.Module, forget: ForgetSet) -> None:
        """Selects the target layers, or finds the head with a pass over the forget set's first batch."""
        if self.targets is not None:
            self.selection = select_targets(model, self.targets)
        elif self.head is None:  # a dict batch of tensors is a forget set of its own (columns)
            self.found_head(model, self.scores(model, next(iter(forget.batches())).data).head)

    def found_head(self, model: nn.Module, name: str) -> None:
        self.head = model.get_submodule(name)

    def parameters(self) -> list[nn.Parameter]:
        return self.selection.parameters() if self.selection is not None else list(self.head.parameters())

    def names(self, model: nn.Module) -> list[str]:
        if self.selection is not None:
            return self.selection.names()
        head = {id(p) for p in self.head.parameters()}
        return [n for n, p in model.named_parameters() if id(p) in head]

    def scores(self, model: nn.Module, forget):
        """``influence_scores`` over a whole forget set (an InfluenceResult)."""
        s = self.settings
        common = dict(damping=s.damping, backend=s.backend, batch_size=s.influence_batch_size or 256)
        with no_autocast(model):
            if self.targets is None:
                return influence_scores(model, forget, **common)
            return influence_scores(model, forget, targets=self.targets, loss_fn=self.loss_fn, **common)

    def batch_scores(self, model: nn.Module, batch: ForgetBatch) -> torch.Tensor:
        """Scores of one batch from that batch alone, in eval mode (modes restored after)."""
        s = self.settings
        with preserved_modes(model), no_autocast(model):
            model.eval()
            if self.selection is None:
                return batch_head_influence(model, self.head, batch, damping=s.damping, backend=s.backend)
            verify, self._verified = not self._verified, True  # check the capture on the run's first batch
            return batch_layer_influence(model, self.selection, batch, self.loss_fn, damping=s.damping,
                                         backend=s.backend, verify=verify)


class IMUObjective:
    """The IMU loss of a batch, with weights refreshed once, every epoch, or from every batch."""

    def __init__(self, theta: Theta | None, loss_fn, settings: IMUSettings):
        self.theta, self.loss_fn, self.settings = theta, loss_fn, settings
        self.weights: torch.Tensor | None = None  # by dataset index, for refresh once | epoch
        self.scores: torch.Tensor | None = None
        self.refreshes = 0
        self.influence_seconds = 0.0  # wall time of every influence computation so far
        self.prepared = False

    @property
    def per_batch(self) -> bool:
        return self.settings.weighting == "influence" and self.settings.refresh == "batch"

    def prepare(self, model: nn.Module, forget: ForgetSet) -> None:
        """Before training: theta_c, and the weights if they come from the whole forget set."""
        if self.settings.weighting == "influence" and not self.per_batch:
            self.refresh(model, forget)  # finds a head on the way
        elif self.theta is not None:
            self.theta.resolve(model, forget)
        if self.settings.weighting == "uniform":
            self.weights = torch.ones(len(forget), dtype=torch.float64)
        self.prepared = True

    def kept_rows(self) -> torch.Tensor | None:
        """The forget rows to train on when the weights are computed once (the others weigh 0)."""
        if self.settings.weighting == "influence" and self.settings.refresh == "once":
            return (self.weights > 0).nonzero().flatten()
        return None

    def refresh(self, model: nn.Module, forget: ForgetSet) -> torch.Tensor:
        """Weights from the influence of every forget sample on the mean forget loss, now."""
        if self.theta.targets is not None and self.theta.selection is None:
            self.theta.resolve(model, forget)
        started = time.perf_counter()
        result = self.theta.scores(model, forget)
        self.influence_seconds += time.perf_counter() - started
        if self.theta.targets is None and self.theta.head is None:
            self.theta.found_head(model, result.head)
        if not torch.equal(result.indices, torch.arange(len(forget))):
            raise RuntimeError("the forget set's scores did not come back in dataset order")
        s = self.settings
        self.scores = result.scores
        self.weights = influence_weights(result.scores, top_fraction=s.top_fraction, clip_quantile=s.clip_quantile)
        self.refreshes += 1
        return self.weights

    def batch_weights(self, model: nn.Module, batch: ForgetBatch) -> torch.Tensor:
        if self.per_batch:
            started = time.perf_counter()
            scores = self.theta.batch_scores(model, batch)
            self.influence_seconds += time.perf_counter() - started
            return dynamic_batch_weights(scores, clip_quantile=self.settings.clip_quantile)
        if batch.indices.numel() and int(batch.indices.max()) >= self.weights.numel():
            raise IndexError(f"forget-set index {int(batch.indices.max())} is beyond the {self.weights.numel()} samples "
                             "the weights were computed for")
        return self.weights[batch.indices]

    def loss(self, model: nn.Module, scoring_model: nn.Module, batch: ForgetBatch, finite: bool):
        """``(L, per-sample losses, weights)``; ``model`` computes the losses (it may be a DDP
        wrapper), ``scoring_model`` (the bare model) the per-batch influence."""
        w = self.batch_weights(scoring_model, batch)
        losses = sample_losses(model, batch, self.loss_fn, model_device(scoring_model), finite=finite).losses
        l1 = self.theta.parameters() if self.theta is not None and self.settings.alpha > 0 else ()
        return imu_loss(losses, w.to(losses.device), l1_params=l1, alpha=self.settings.alpha), losses, w
