"""What every forget-set trainer adds to its host ``transformers.Trainer``, whatever the host.

The host class (Hugging Face's ``Trainer``, open-unlearning's ``UnlearnTrainer``) supplies three
things: ``_forget_inputs(inputs) -> (batch, dataset indices)`` for a training batch,
``_forget_set()`` (the whole forget set as a ``ForgetSet``, batches without the index), and
``_restrict(rows)`` / ``_unrestrict()`` (train on some forget rows only). The mixin then

- before training (``train``): prepares the objective (influence parameters, weights of a
  once/epoch refresh, NPO's reference), switches off ``requires_grad`` outside theta_c when
  ``scope="head"`` (never on; restored after) and, for weights computed once, trains on the kept
  samples only (``imu_fast.unlearn`` does the same);
- per training batch (``compute_loss``): the objective's loss; an evaluation batch gets the
  host's own loss;
- keeps ``stop_reason`` and ``forget_log`` for ``IMUCallback``.

The loss of a batch is its own (weighted) mean, so ``model_accepts_loss_kwargs`` is off: the
Trainer divides it by the gradient-accumulation steps instead of counting tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..forget_set import ForgetBatch
from .settings import StopCriteria


class ForgetTrainerMixin:
    def _init_forget(self, objective, stop: StopCriteria | None, scope: str, where: str) -> None:
        if isinstance(stop, Mapping):  # from a config file
            stop = StopCriteria(**stop)
        if stop is not None and not isinstance(stop, StopCriteria):
            raise TypeError(f"{where}: stop must be a StopCriteria, got {type(stop).__name__}")
        self.objective = objective
        self.stop_criteria = stop
        self.scope = scope
        self.where = where
        self.stop_reason: str | None = None
        self.forget_log: list[dict] = []
        self.trained_names: list[str] = []
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False  # transformers >= 5: a per-batch mean, divided by the accumulation

    # -- before and after training ------------------------------------------------------------------

    def _train_only(self, model) -> list[tuple[torch.nn.Parameter, bool]]:
        """Switches off every parameter outside theta_c (scope 'head'); returns the flags to restore."""
        flags = [(p, p.requires_grad) for p in model.parameters()]
        theta = self.objective.theta
        if self.scope != "head" or theta is None:
            self.trained_names = [n for n, p in model.named_parameters() if p.requires_grad]
            return flags
        chosen = {id(p) for p in theta.parameters()}
        if not any(p.requires_grad for p in theta.parameters()):
            raise ValueError(f"{self.where}: scope='head' trains the influence parameters {theta.names(model)[:6]}, "
                             "but every one of them is frozen (requires_grad=False); unfreeze them, choose other "
                             "targets=, or use scope='all'")
        for p in model.parameters():
            if id(p) not in chosen:
                p.requires_grad_(False)
        self.trained_names = [n for n, p in model.named_parameters() if p.requires_grad]
        return flags

    def train(self, *args, **kwargs):
        self.stop_reason, self.forget_log = None, []
        model = self.model
        self.objective.prepare(model, self._forget_set())
        kept = self.objective.kept_rows()
        if kept is not None:
            if kept.numel() == 0:
                raise ValueError(f"{self.where}: no forget sample has a negative influence score, so the IMU recipe "
                                 "keeps none and there is nothing to unlearn (see the warning above); check the model "
                                 "and data, or use weighting='uniform'")
            self._restrict(kept)
        try:
            flags = self._train_only(model)
            try:
                return super().train(*args, **kwargs)
            finally:
                for p, flag in flags:
                    p.requires_grad_(flag)
        finally:
            if kept is not None:
                self._unrestrict()

    # -- per batch ----------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: the model's own loss, exactly as the host computes it
            extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **extra)
        data, indices = self._forget_inputs(inputs)
        batch = ForgetBatch(data, indices, indices)
        if not self.objective.prepared:  # called outside train()
            self.objective.prepare(self.model, self._forget_set())
        # Non-finite losses before the first update are bad data (an error naming the samples); later, divergence.
        first = self.state.global_step == 0
        loss, losses, weights = self.objective.loss(model, self.model, batch, finite=first)
        if not (torch.isfinite(loss) and torch.isfinite(losses.detach()).all()):  # zero weights can hide a NaN
            self.stop_reason = (f"the loss became non-finite at step {self.state.global_step}; training stopped and "
                                "the batch's loss was replaced by zero (lower the learning rate)")
            # A zero that reaches every trained parameter without passing through the non-finite losses
            # (whose backward would carry NaN into the gradients).
            loss = sum((p * 0.0).sum() for p in self.model.parameters() if p.requires_grad)
        return (loss, {"losses": losses.detach(), "weights": weights}) if return_outputs else loss
