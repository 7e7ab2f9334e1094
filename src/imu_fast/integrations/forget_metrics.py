"""Forget loss and forget accuracy over the whole forget set, for the stop criteria.

Accuracy is the share of forget samples whose every target is the model's argmax: the class of a
classifier, every label token (teacher forcing) of a causal language model, so that 0% means no
forget answer is reproduced by greedy decoding. The loss is the mean per-sample loss the
unlearning ascends (the mean token cross-entropy of each sequence, or the class cross-entropy).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..forget_set import ForgetSet, sample_losses
from ..forget_set.batch import to_device
from ..lm import IGNORE_INDEX, causal_lm_losses
from ..model_io import logits_of, model_device
from ..modes import preserved_modes


def lm_losses_and_hits(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean token loss (as ``causal_lm_losses``) and whether every label token is the argmax."""
    batch = to_device(batch, model_device(model))
    ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch.get("labels")
    if labels is None:
        labels = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
    logits = logits_of(model(input_ids=ids, attention_mask=mask))[:, :-1].float()
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX,
                                reduction="none").view(target.shape)
    counts = valid.sum(1).clamp_min(1)
    hits = ((logits.argmax(-1) == target) | ~valid).all(1) & valid.any(1)
    return per_token.sum(1) / counts, hits


@torch.no_grad()
def forget_metrics(model: nn.Module, forget: ForgetSet, loss_fn) -> dict:
    """``{"forget_loss": mean loss, "forget_accuracy": percent or None}`` in eval mode; accuracy is
    None for a custom ``loss_fn`` (there is no argmax to compare with)."""
    losses, hits = [], []
    with preserved_modes(model):
        model.eval()
        for batch in forget.batches():
            if loss_fn is causal_lm_losses:
                loss, hit = lm_losses_and_hits(model, batch.data)
            elif loss_fn is None:
                out = sample_losses(model, batch, None, model_device(model), finite=False)
                loss, hit = out.losses, out.logits.argmax(1) == out.labels
            else:
                loss, hit = sample_losses(model, batch, loss_fn, model_device(model), finite=False).losses, None
            losses.append(loss.float().cpu())
            if hit is not None:
                hits.append(hit.cpu())
    loss = torch.cat(losses)
    mean = float(loss.mean()) if torch.isfinite(loss).all() else math.inf
    accuracy = 100.0 * float(torch.cat(hits).float().mean()) if hits else None
    return {"forget_loss": mean, "forget_accuracy": accuracy}
