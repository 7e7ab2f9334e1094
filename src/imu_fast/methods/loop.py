"""The training loop every method behind ``unlearn`` runs.

A method is an ``Objective``: which positions of its data set an epoch visits, and the loss of one
mini-batch. The loop owns everything else, the same way for every method: the optimiser (SGD or
AdamW) over exactly the trained parameters, shuffling seeded by ``cfg.seed``, train-mode forwards
(BatchNorm statistics drift unless ``freeze_batchnorm``), a stop on a non-finite loss, the
per-epoch report, the stop criteria (``methods.stopping``), checkpoints and resuming
(``methods.checkpoint``), and data parallelism.

Inside a torch.distributed process group every global mini-batch (the same shuffled order on every
process) is split into one contiguous share per process; each process reads and forwards only its
share, the objective is scaled so that the shares' losses add up to the one-process loss, the
gradients are summed over processes before each step and the buffers (BatchNorm statistics) are
taken from process 0 after it, as DistributedDataParallel does. Every process thus makes the
same step, and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..config import UnlearnConfig
from ..forget_set import ForgetBatch, ForgetSet, local_share
from ..report import UnlearnReport
from ..stop import StopCriteria
from .checkpoint import Checkpoints, Progress, rng_state, set_rng_state
from .common import make_optimizer, train_mode, training_scope
from .stopping import forget_state


@dataclass
class BatchPart:
    """This process's rows of one mini-batch (all of them in one process; possibly none in a group)."""

    batch: ForgetBatch
    positions: torch.Tensor  # positions of the whole mini-batch, on every process
    first: bool  # no optimiser step has been made yet: non-finite losses mean bad data, not divergence
    across_processes: bool

    @property
    def share(self) -> float:
        """This share's fraction of the mini-batch, to scale a batch-mean objective."""
        return self.batch.size / self.positions.numel()


@dataclass
class BatchLoss:
    loss: torch.Tensor | None  # this share's part of the objective (None: nothing to backpropagate here)
    forget_losses: torch.Tensor | None  # this share's per-sample forget losses (None: not forget data)


class Objective:
    """What a method supplies; see the module docstring."""

    data: ForgetSet
    empty_message = "nothing to train on"

    def start(self) -> None:
        """Work before epoch 0 of a fresh run (not repeated when resuming)."""

    def epoch_positions(self, epoch: int) -> torch.Tensor | None:
        """Positions of ``data`` epoch ``epoch`` visits (None: all of them)."""
        return None

    def batch_loss(self, part: BatchPart) -> BatchLoss | None:  # None: skip the batch, no step
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores ``state_dict()``; the positions of the epoch in progress must follow from it."""


@dataclass
class RunControl:
    """What ``unlearn`` adds to a method's run: stop criteria on the forget set and checkpoints."""

    stop: StopCriteria | None = None
    forget: ForgetSet | None = None  # the forget set the stop criteria read
    loss_fn: object = None
    checkpoints: Checkpoints | None = None


def _batches(data: ForgetSet, positions, generator, batch_size: int, across: bool):
    """``(this process's batch, the whole batch's positions)`` for one epoch."""
    if not across:
        for batch in data.epoch_batches(positions, generator=generator):
            yield batch, batch.positions
        return
    chunks = torch.split(data.epoch_order(positions, generator=generator), batch_size)
    mine = [(k, chunk[distributed.share(chunk.numel())]) for k, chunk in enumerate(chunks)]
    yield from ((batch, chunk) for batch, chunk in zip(data.batches_of(mine), chunks))


class _Stopper:
    def __init__(self, model: nn.Module, control: RunControl, across: bool):
        self.model, self.control, self.across = model, control, across
        self.share = None
        if control.stop is not None and control.stop.reads_forget_set:
            self.share = local_share(control.forget) if across else control.forget

    def reason(self, report: UnlearnReport, steps: int) -> str:
        stop = self.control.stop
        if stop is None:
            return ""
        if self.share is not None and steps % stop.check_every == 0:
            report.final_forget = forget_state(self.model, self.share, self.control.loss_fn, self.across)
        return stop.met(steps, report.final_forget.get("forget_accuracy"), report.final_forget.get("forget_loss"))


def _step(model, trained, optimizer, objective: Objective, part: BatchPart, cfg, across: bool, where: str):
    """One optimiser step on one mini-batch: ``(objective value, mean forget loss | None)``, None for
    a skipped batch, or ``(nan, None)`` for a non-finite loss (no step made)."""
    train_mode(model, cfg.freeze_batchnorm)
    with distributed.together(where, across):
        out = objective.batch_loss(part)
        if out is not None:
            optimizer.zero_grad(set_to_none=True)
            if out.loss is not None and out.loss.requires_grad and (across or torch.isfinite(out.loss)):
                out.loss.backward()
    if out is None:
        return None
    value = 0.0 if out.loss is None else out.loss.item()
    forget = None if out.forget_losses is None else out.forget_losses.detach().double().sum().item()
    if across:
        totals = torch.tensor([value, forget or 0.0], dtype=torch.float64)
        distributed.all_reduce_sum_([totals])
        value, forget = totals[0].item(), None if forget is None else totals[1].item()
    if not math.isfinite(value):
        return math.nan, None
    if across:
        distributed.sum_gradients_(trained)
    optimizer.step()
    if across:
        distributed.broadcast_(list(model.buffers()))
    return value, None if forget is None else forget / part.positions.numel()


def run_loop(model: nn.Module, objective: Objective, trained: list[nn.Parameter], cfg: UnlearnConfig,
             report: UnlearnReport, control: RunControl | None = None) -> UnlearnReport:
    """Runs ``objective`` for ``cfg.epochs`` (or until a stop criterion holds), updating ``trained`` only."""
    control = control or RunControl()
    data, across, ckpt = objective.data, distributed.active(), control.checkpoints
    with training_scope(model, trained):
        optimizer = make_optimizer(trained, cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        progress, resumed = Progress(), ckpt is not None and ckpt.saved is not None
        if resumed:
            progress, state = ckpt.restore(model=model, trained=trained, optimizer=optimizer, report=report)
            objective.load_state_dict(state)
            if progress.finished:
                set_rng_state(*ckpt.rng("rng"), generator)
                return report
        else:
            objective.start()
        stopper = _Stopper(model, control, across)
        epoch_rng = None
        reason = "" if resumed else stopper.reason(report, 0)

        def save(finished: bool = False):
            if ckpt is not None:
                progress.finished = finished
                ckpt.save(model=model, trained=trained, optimizer=optimizer, generator=generator, progress=progress,
                          epoch_rng=epoch_rng or rng_state(generator), objective_state=objective.state_dict(),
                          report=report)

        while progress.epoch < cfg.epochs and not reason:
            mid_epoch = resumed and progress.batch > 0
            if resumed and not mid_epoch:
                set_rng_state(*ckpt.rng("rng"), generator)
            positions = objective.epoch_positions(progress.epoch)
            if positions is not None and positions.numel() == 0:
                report.message = objective.empty_message
                break
            if mid_epoch:  # replay the epoch's order and data up to where the checkpoint was taken
                epoch_rng = ckpt.rng("epoch_rng")
                set_rng_state(*epoch_rng, generator)
            else:
                epoch_rng = rng_state(generator)
            batches = _batches(data, positions, generator, cfg.batch_size, across)
            for _ in range(progress.batch):
                next(batches)
            if mid_epoch:
                set_rng_state(*ckpt.rng("rng"), generator)
            resumed = False
            total = None if positions is None and data.size is None else math.ceil(
                (data.size if positions is None else positions.numel()) / cfg.batch_size)
            bar = tqdm(batches, total=total, initial=progress.batch, leave=False, disable=not cfg.progress,
                       desc=f"{report.method} epoch {progress.epoch + 1}/{cfg.epochs}")
            started, influence_before = time.perf_counter(), report.influence_seconds
            for batch, whole in bar:
                part = BatchPart(batch, whole, progress.steps == 0, across)
                result = _step(model, trained, optimizer, objective, part, cfg, across,
                               f"batch {progress.batch} of epoch {progress.epoch + 1}")
                progress.batch += 1
                if result is None:
                    continue
                value, forget = result
                if math.isnan(value):
                    report.diverged = True
                    report.message = (f"the loss became non-finite in epoch {progress.epoch + 1}; stopped "
                                      "(lower lr or epochs)")
                    break
                progress.steps += 1
                progress.objective += value
                progress.batches += 1
                if forget is not None:
                    progress.forget_loss += forget
                    progress.forget_batches += 1
                    bar.set_postfix(forget_loss=f"{forget:.3f}")
                reason = stopper.reason(report, progress.steps)
                if reason:
                    break
                if ckpt is not None and progress.batch % ckpt.every == 0:
                    report.steps = progress.steps
                    save()
            bar.close()
            # Per-batch influence (dynamic variant) is reported under influence, not updates.
            report.update_seconds += time.perf_counter() - started - (report.influence_seconds - influence_before)
            if report.diverged:
                break
            if progress.batches or not reason:  # an epoch cut short by a stop criterion counts if it stepped
                report.epoch_objective.append(progress.objective / progress.batches if progress.batches else math.nan)
                # NaN where the loop never saw forget data (FT, Retrain): it was not measured.
                report.epoch_forget_loss.append(progress.forget_loss / progress.forget_batches
                                                if progress.forget_batches else math.nan)
            progress = Progress(epoch=progress.epoch + 1, steps=progress.steps)
            report.steps = progress.steps
            if not reason and progress.epoch < cfg.epochs:
                save()
        report.steps, report.stopped_by = progress.steps, reason
        save(finished=True)
    if across:
        distributed.check_same_weights(model, "the weights after unlearning")
    return report
