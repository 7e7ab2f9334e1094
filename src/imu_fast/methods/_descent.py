"""The descent objective the baselines share (NPO, RL, FT, Retrain), run by the common loop.

Each method supplies one function ``step(out, batch) -> (objective, forget_losses)``, where ``out``
holds the batch's per-sample losses (cross-entropy on the true labels, or the user's ``loss_fn``)
and, for classifiers, its logits and labels, and ``batch`` its positions in the data set: it
returns the batch-mean scalar to minimise and the per-sample forget losses to report (or ``None``
when the batch is not forget data). Everything else is the loop's (``methods.loop``). Split over
processes, each share's batch mean is scaled by its share of the batch, so the shares add up.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import UnlearnConfig
from ..forget_set import BatchLosses, ForgetBatch, ForgetSet, sample_losses
from ..model_io import model_device
from ..report import UnlearnReport
from .common import has_training_batchnorm
from .loop import BatchLoss, BatchPart, Objective, RunControl, run_loop

Step = Callable[[BatchLosses, ForgetBatch], "tuple[torch.Tensor, torch.Tensor | None]"]


class Descent(Objective):
    def __init__(self, model: nn.Module, data: ForgetSet, step: Step, loss_fn=None, start: Callable | None = None,
                 state: dict | None = None):
        self.model, self.data, self.step, self.loss_fn = model, data, step, loss_fn
        self.device = model_device(model)
        self._start = start
        self.state = state if state is not None else {}  # what ``start`` computed (saved in checkpoints)

    def start(self) -> None:
        if self._start is not None:
            self._start()

    def batch_loss(self, part: BatchPart) -> BatchLoss | None:
        if part.positions.numel() == 1 and (self.data.size or 2) > 1 and has_training_batchnorm(self.model):
            return None  # batch statistics of one sample are meaningless; shuffling shows it again
        forget_data = self.data.what == "forget"
        if not part.batch.size:
            return BatchLoss(None, torch.zeros(0) if forget_data else None)
        # Non-finite losses before any update mean bad data or weights (an error naming the samples);
        # after updates, a diverged run (stopped and reported).
        out = sample_losses(self.model, part.batch, self.loss_fn, self.device, self.data.what, finite=part.first)
        loss, losses = self.step(out, part.batch)
        return BatchLoss(loss * part.share if part.across_processes else loss, losses)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state.update(state)


def run_descent(model: nn.Module, data: ForgetSet, trained: list[nn.Parameter], cfg: UnlearnConfig,
                report: UnlearnReport, step: Step, loss_fn=None, control: RunControl | None = None,
                start: Callable | None = None, state: dict | None = None) -> UnlearnReport:
    """Minimises ``step``'s objective over ``data`` for ``cfg.epochs``, updating ``trained`` only."""
    return run_loop(model, Descent(model, data, step, loss_fn, start, state), trained, cfg, report, control)
