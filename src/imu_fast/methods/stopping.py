"""The forget-set check behind the stop criteria: accuracy and mean loss over the whole forget set,
in eval mode, read in shares inside a process group (the same numbers on every process). The
check leaves torch's random state as it found it, so a run stopped after k steps is the first k
steps of the run without stop criteria."""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed
from ..forget_set import ForgetSet, sample_losses
from ..model_io import model_device
from ..modes import preserved_modes


@torch.no_grad()
def forget_state(model: nn.Module, share: ForgetSet, loss_fn, across_processes: bool) -> dict:
    """``{"forget_accuracy": fraction or None, "forget_loss": mean}``; ``share`` is this process's
    block of the forget set (all of it in one process). Accuracy needs classification data."""
    device = model_device(model)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
    with preserved_modes(model), torch.random.fork_rng(devices=[]), \
            distributed.together("the stop criteria's forget-set check", across_processes):
        model.eval()
        for batch in share.batches():
            out = sample_losses(model, batch, loss_fn, device, share.what, finite=False)
            totals[0] += out.losses.double().sum().cpu()
            if out.logits is not None:
                totals[1] += (out.logits.argmax(dim=1) == out.labels).sum().cpu()
            totals[2] += batch.size
    if across_processes:
        distributed.all_reduce_sum_([totals])
    loss_sum, correct, n = totals.tolist()
    return {"forget_accuracy": None if loss_fn is not None else correct / n, "forget_loss": loss_sum / n}
