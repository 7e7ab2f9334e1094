"""The ``IMU`` method class for open-unlearning's trainer registry (imported only when open-unlearning is)."""

from __future__ import annotations

from collections.abc import Mapping

from torch.utils.data import DataLoader
from trainer.unlearn.base import UnlearnTrainer

from ...forget_set import as_forget_set
from ..data import DropKey, Rows, check_map_style, take_indices
from ..huggingface.callback import IMUCallback
from ..objective import IMUObjective, Theta
from ..settings import IMUSettings
from ..theta import default_theta
from ..trainer_mixin import ForgetTrainerMixin

WHERE = "open-unlearning IMU"
MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


class IMU(ForgetTrainerMixin, UnlearnTrainer):
    """IMU on the forget half of open-unlearning's ``ForgetRetainDataset`` (the retain half is never read).

    ``method_args`` (see ``IMU.yaml``) are ``IMUTrainer``'s settings: ``refresh``, ``alpha``,
    ``damping``, ``top_fraction``, ``clip_quantile``, ``weighting``, ``scope``, ``backend``,
    ``influence_batch_size``, ``targets`` (null: q/k/v/o of three decoder layers at the authors'
    relative depth) and ``index_key``, the batch key under which the collator carries each forget
    sample's index (``DataCollatorForSupervisedDataset(tokenizer, index="index")``; each forget
    item's index must be its row in the forget dataset, which is checked). ``compute_loss`` takes
    ``num_items_in_batch`` (transformers >= 4.46 passes it; the loss is a per-batch mean either way).
    """

    def __init__(self, *args, targets=None, loss_fn=None, stop=None, index_key: str = "index", **kwargs):
        settings = IMUSettings.from_kwargs(kwargs)
        super().__init__(*args, **kwargs)
        self.where = WHERE
        if getattr(self.args, "remove_unused_columns", False):
            raise ValueError(f"{WHERE}: open-unlearning nests each sample under 'forget' / 'retain', which "
                             "remove_unused_columns would drop: set trainer.args.remove_unused_columns: false")
        forget = getattr(self.train_dataset, "forget", None)
        check_map_style(forget, f"{WHERE} (the train dataset's forget half)")
        self.index_key, self._rows_checked = index_key, False
        self._full_dataset = self.train_dataset
        targets, loss_fn, _ = default_theta(self.model, list(targets) if targets is not None else None, loss_fn)
        theta = Theta(targets, loss_fn, settings) if settings.needs_theta else None
        self._init_forget(IMUObjective(theta, loss_fn, settings), stop, settings.scope, WHERE)
        self.add_callback(IMUCallback(self))

    def _forget_inputs(self, inputs):
        if not isinstance(inputs, Mapping) or "forget" not in inputs:
            raise KeyError(f"{WHERE}: a training batch without its 'forget' part (got "
                           f"{sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__})")
        data, indices = take_indices(inputs["forget"], self.index_key, WHERE)
        return {k: data[k] for k in MODEL_INPUTS if k in data}, indices

    def _check_rows(self, forget) -> None:
        """The weights are looked up by the collated index, so it must be each item's row."""
        for row in range(len(forget)):
            item = forget[row]
            value = item.get(self.index_key) if isinstance(item, Mapping) else None
            if value is None or int(value) != row:
                raise ValueError(f"{WHERE}: forget item {row} carries {self.index_key!r} = {value!r}; each forget "
                                 "item's index must be its row in the forget dataset")
        self._rows_checked = True

    def _forget_set(self):
        forget = self._full_dataset.forget
        if not self._rows_checked:
            self._check_rows(forget)
        settings = self.objective.settings
        batch_size = settings.influence_batch_size or self.args.per_device_train_batch_size
        return as_forget_set(DataLoader(forget, batch_size=batch_size,
                                        collate_fn=DropKey(self.data_collator, self.index_key)))

    def _restrict(self, rows):
        if getattr(self._full_dataset, "anchor", "forget") != "forget":
            raise ValueError(f"{WHERE}: refresh='once' trains on the kept forget rows, which needs the forget-anchored "
                             "dataset (data.anchor: forget); use refresh='batch' or 'epoch' otherwise")
        self.train_dataset = Rows(self._full_dataset, rows)

    def _unrestrict(self):
        self.train_dataset = self._full_dataset
