"""``IMUTrainer`` and ``NPOTrainer``: ``transformers.Trainer`` subclasses that unlearn their train dataset."""

from __future__ import annotations

from torch.utils.data import DataLoader
from transformers import Trainer

from ...forget_set import as_forget_set
from ...lm import causal_lm_losses
from ..data import INDEX_KEY, IndexCollator, IndexedDataset, Rows, check_map_style, take_indices
from ..npo_objective import NPOObjective
from ..objective import IMUObjective, Theta
from ..settings import IMUSettings, StopCriteria
from ..theta import default_theta
from ..trainer_mixin import ForgetTrainerMixin
from .callback import IMUCallback


class _ForgetSetTrainer(ForgetTrainerMixin, Trainer):
    """The train dataset is the forget set; each sample's index rides through the collator."""

    def _wrap_data(self, where: str) -> None:
        self.forget_dataset, self.forget_collator = self.train_dataset, self.data_collator
        self._indexed = IndexedDataset(self.forget_dataset)
        self.train_dataset = self._indexed
        self.data_collator = IndexCollator(self.forget_collator)

    def _check_stop(self, stop, loss_fn) -> None:
        custom = loss_fn is not None and loss_fn is not causal_lm_losses
        if stop is not None and stop.forget_accuracy_at_most is not None and custom:
            raise ValueError(f"{self.where}: forget_accuracy_at_most needs an argmax to compare with: it applies to "
                             "causal LMs and classifiers, not to a custom loss_fn (use forget_loss_at_least)")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if INDEX_KEY not in self._signature_columns:  # remove_unused_columns must keep the index
            self._signature_columns.append(INDEX_KEY)

    def _forget_inputs(self, inputs):
        return take_indices(inputs, INDEX_KEY, self.where)

    def _forget_set(self):
        settings = getattr(self.objective, "settings", None)  # NPO has none
        batch_size = getattr(settings, "influence_batch_size", None) or self.args.per_device_train_batch_size
        collate = self._get_collator_with_removed_columns(self.forget_collator, description="forget set")
        return as_forget_set(DataLoader(self.forget_dataset, batch_size=batch_size, collate_fn=collate))

    def _restrict(self, rows):
        self.train_dataset = Rows(self._indexed, rows)

    def _unrestrict(self):
        self.train_dataset = self._indexed


class IMUTrainer(_ForgetSetTrainer):
    """A ``Trainer`` whose training loss is IMU's influence-weighted gradient ascent on ``train_dataset``.

    ``IMUTrainer(model=..., args=..., train_dataset=forget_set)`` works as it is for a causal LM
    (theta_c = q/k/v/o of three decoder layers, see ``imu_fast.integrations.theta``; per-sequence
    mean token loss) and for a sequence classifier (theta_c = its head; class cross-entropy).
    ``targets=`` (parameter names, parameters or modules) and ``loss_fn=`` (per-sample losses,
    ``loss_fn(model, batch) -> (B,)``) choose otherwise. The IMU settings are keyword arguments
    (``IMUSettings``; defaults: the authors' language-model recipe): ``refresh`` ("batch": weights
    from each batch alone; "once": from the whole forget set before training, and only the kept
    samples are trained on; "epoch": recomputed at each epoch start), ``alpha``, ``damping``,
    ``top_fraction``, ``clip_quantile``, ``weighting`` ("uniform" = plain gradient ascent),
    ``scope`` ("head": train theta_c only; "all": every parameter the Trainer trains), ``backend``,
    ``influence_batch_size``. ``stop=StopCriteria(...)`` stops on the forget set alone.

    Everything else is the Trainer's: the optimiser (AdamW unless ``optimizers=``/``args.optim``
    say otherwise), the schedule, gradient accumulation (each micro-batch's loss is its own
    weighted mean; the Trainer averages them), bf16/fp16 (influence is computed outside autocast),
    DDP (each process scores its own batches). With ``refresh="epoch"`` every sample is visited
    (the Trainer's step count is fixed), and a batch none of whose samples is kept has a zero loss;
    the optimiser still takes its step (AdamW's momentum and weight decay move the weights). (Per
    batch this cannot happen: a batch's influences on its own mean loss sum to <= 0.) Evaluation (``eval_dataset``) reports the model's
    own loss, as the Trainer does. ``train_dataset`` must be map-style with dict samples; a
    training batch that arrives without its forget-set indices is an error. After ``train``:
    ``objective.weights`` / ``objective.scores`` (once/epoch), ``trained_names``, ``stop_reason``,
    ``forget_log``.
    """

    def __init__(self, model=None, args=None, *, targets=None, loss_fn=None, stop: StopCriteria | None = None,
                 **kwargs):
        settings = IMUSettings.from_kwargs(kwargs)
        check_map_style(kwargs.get("train_dataset"), "IMUTrainer")  # before the Trainer's own checks
        super().__init__(model=model, args=args, **kwargs)
        self.where = "IMUTrainer"
        self._wrap_data(self.where)
        targets, loss_fn, _ = default_theta(self.model, targets, loss_fn)
        theta = Theta(targets, loss_fn, settings) if settings.needs_theta else None
        self._init_forget(IMUObjective(theta, loss_fn, settings), stop, settings.scope, self.where)
        self._check_stop(stop, loss_fn)
        self.add_callback(IMUCallback(self))


class NPOTrainer(_ForgetSetTrainer):
    """A ``Trainer`` whose training loss is NPO on ``train_dataset`` (``imu_fast.npo_loss``, beta
    ``beta``), the same per-sample losses and defaults as ``IMUTrainer`` (``loss_fn=``), every
    parameter the Trainer trains; ``stop=`` as there. The reference log-probabilities are the
    model's before training, computed in eval mode when ``train`` starts."""

    def __init__(self, model=None, args=None, *, beta: float = 0.1, loss_fn=None,
                 stop: StopCriteria | None = None, **kwargs):
        check_map_style(kwargs.get("train_dataset"), "NPOTrainer")
        super().__init__(model=model, args=args, **kwargs)
        self.where = "NPOTrainer"
        self._wrap_data(self.where)
        _, loss_fn, _ = default_theta(self.model, None, loss_fn)
        self._init_forget(NPOObjective(loss_fn, beta), stop, "all", self.where)
        self._check_stop(stop, loss_fn)
        self.add_callback(IMUCallback(self))
