"""``IMUCallback``: refreshes the weights every epoch and applies the forget-set stop criteria."""

from __future__ import annotations

from transformers import TrainerCallback

from ..forget_metrics import forget_metrics


class IMUCallback(TrainerCallback):
    """Installed by the forget-set trainers on themselves (one per trainer).

    - ``refresh="epoch"``: recomputes the influence weights over the whole forget set at the start
      of every epoch after the first (the first epoch's come from ``train``); if none is kept any
      more, training stops (nothing is left to unlearn by the recipe).
    - ``stop=StopCriteria(...)``: stops at the step budget, or once the forget loss / accuracy
      measured on the forget set reaches its target (at each epoch end, and every
      ``check_every`` steps); each measurement is appended to ``trainer.forget_log``.
    - a non-finite loss (a diverged run) stops training at the end of that step.

    The reason is kept in ``trainer.stop_reason``.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self._first_epoch = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._first_epoch = True

    def on_epoch_begin(self, args, state, control, **kwargs):
        t = self.trainer
        settings = getattr(t.objective, "settings", None)
        if self._first_epoch or settings is None or settings.weighting != "influence" or settings.refresh != "epoch":
            self._first_epoch = False
            return
        weights = t.objective.refresh(t.model, t._forget_set())
        if not (weights > 0).any():
            self._stop(control, f"at epoch {round(state.epoch or 0)} no forget sample has a negative influence score "
                                "any more: nothing left to unlearn by the recipe")

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        stop = t.stop_criteria
        if t.stop_reason:
            control.should_training_stop = True
        elif stop is not None and stop.max_steps is not None and state.global_step >= stop.max_steps:
            self._stop(control, stop.met(state.global_step, None, None))
        elif stop is not None and state.global_step % stop.check_every == 0:
            self._measure(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.trainer.stop_criteria is not None and not self.trainer.stop_reason:
            self._measure(state, control)

    def _measure(self, state, control) -> None:
        t, stop = self.trainer, self.trainer.stop_criteria
        if not stop.reads_forget_set or t.forget_log and t.forget_log[-1]["step"] == state.global_step:
            return  # nothing to measure, or measured at this step already
        entry = {"step": state.global_step, "epoch": state.epoch,
                 **forget_metrics(t.model, t._forget_set(), t.objective.loss_fn)}
        t.forget_log.append(entry)
        accuracy = None if entry["forget_accuracy"] is None else entry["forget_accuracy"] / 100  # a fraction
        reason = stop.met(state.global_step, accuracy, entry["forget_loss"])
        if reason:
            self._stop(control, reason)

    def _stop(self, control, reason: str) -> None:
        self.trainer.stop_reason = reason
        control.should_training_stop = True
