"""Measurements of the language-model study.

- **Answer accuracy** (the headline number): the share of facts whose answer tokens are *all* the
  model's argmax under teacher forcing. For a causal LM this is exactly "greedy decoding from the
  question reproduces the answer" (each greedy step sees the same prefix as teacher forcing as long
  as every earlier step was right), so it is greedy exact match without running generate().
  The first-answer-token accuracy is recorded beside it.
- **Answer loss**: per fact, the mean cross-entropy over its answer tokens (``causal_lm_losses``).
- **Perplexity** on general English the facts never touch: exp of the mean next-token NLL over fixed
  chunks of CPython's ``pydoc_data.topics`` (every token of every chunk but the first is predicted).
- **MIA AUC**: a loss-threshold membership-inference attack, scored by the ROC AUC
  (``sklearn.metrics.roc_auc_score``) of -loss for forget facts (members, label 1) against facts of
  people never trained on (label 0). 1.0 = every forget fact looks more "seen" than every unseen one;
  0.5 = indistinguishable (the goal of unlearning); below 0.5 = the forget facts now look *less*
  likely than facts the model never saw, itself a tell-tale sign of unlearning.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..extras import require
from ..model_io import model_device
from ..model_io import logits_of
from .lm_facts import IGNORE_INDEX


def answer_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at ``positions`` (a boolean (B, T) mask) only: the decoder runs on every token, but the
    vocabulary-sized output layer only where a prediction is scored (about a fifth of a facts' tokens).
    Models without the usual ``base_model`` + output-embedding split fall back to the full logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    if isinstance(head, nn.Linear) and body is not None and body is not model:
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        return head(hidden[positions]).float()
    return logits_of(model(input_ids=ids, attention_mask=mask))[positions].float()


def _trimmed(chunk: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked ids, mask and labels without the padding columns no sample of the batch uses."""
    mask = torch.stack([s["attention_mask"] for s in chunk])
    width = int(mask.sum(1).max())
    return (torch.stack([s["input_ids"][:width] for s in chunk]), mask[:, :width],
            torch.stack([s["labels"][:width] for s in chunk]))


def answer_losses(model: nn.Module, batch: dict) -> torch.Tensor:
    """Per-sequence mean NLL of the labelled tokens: the same numbers as ``imu_fast.lm.causal_lm_losses``
    (labels shifted inside, -100 ignored), but the output layer runs only where a label is scored."""
    device = model_device(model)
    ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    width = int(mask.sum(1).max())
    ids, mask, labels = ids[:, :width], mask[:, :width], labels[:, :width]
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    positions = torch.cat([valid, torch.zeros_like(valid[:, :1])], dim=1)
    nll = F.cross_entropy(answer_logits(model, ids, mask, positions), target[valid], reduction="none")
    counts = valid.sum(1)
    if (counts == 0).any():
        raise ValueError("a sequence has no labelled token")
    return torch.zeros(ids.shape[0], dtype=nll.dtype, device=device).index_add(0, valid.nonzero()[:, 0], nll) / counts


@torch.no_grad()
def fact_scores(model: nn.Module, samples: list[dict], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per fact, in the order given: ``loss`` (mean answer-token NLL), ``exact`` (every answer token
    is the argmax under teacher forcing) and ``first`` (the first answer token is)."""
    was_training = model.training
    model.eval()
    n = len(samples)
    loss, exact, first = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    order = sorted(range(n), key=lambda i: int(samples[i]["attention_mask"].sum()))  # similar lengths batch together
    device = model_device(model)
    try:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            ids, mask, labels = (t.to(device) for t in _trimmed([samples[i] for i in idx]))
            # position t predicts token t + 1: the scored positions are those whose next label is valid
            target = labels[:, 1:]
            valid = target != IGNORE_INDEX
            positions = torch.cat([valid, torch.zeros_like(valid[:, :1])], dim=1)
            logits = answer_logits(model, ids, mask, positions)  # (n_valid, V) in row-major order
            y = target[valid]
            nll = F.cross_entropy(logits, y, reduction="none")
            hit = logits.argmax(-1) == y
            nll, hit, valid = nll.cpu(), hit.cpu(), valid.cpu()
            row = valid.nonzero()[:, 0]
            counts = valid.sum(1)
            loss[idx] = (torch.zeros(len(idx)).index_add_(0, row, nll) / counts).numpy()
            exact[idx] = (torch.zeros(len(idx)).index_add_(0, row, hit.float()) == counts).numpy()
            firsts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
            first[idx] = hit[firsts].numpy()
    finally:
        model.train(was_training)
    return {"loss": loss, "exact": exact, "first": first}


@torch.no_grad()
def perplexity(model: nn.Module, chunks: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over all predicted positions of ``chunks`` (n, length); inf (or NaN)
    for a model whose NLL is astronomically large (or NaN)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, chunks.shape[0], batch_size):
            ids = chunks[start:start + batch_size].to(model_device(model))
            logits = logits_of(model(input_ids=ids))[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    nll = total / count
    return math.exp(nll) if nll < 700 else math.inf  # a wrecked model's perplexity overflows a float


def mia_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """ROC AUC of the attack "lower loss = member" (members labelled 1)."""
    roc_auc_score = require("sklearn.metrics", "studies", "the language-model study's MIA").roc_auc_score

    y = np.concatenate([np.ones(len(member_loss)), np.zeros(len(nonmember_loss))])
    return float(roc_auc_score(y, -np.concatenate([member_loss, nonmember_loss])))


def measure(model: nn.Module, sets: dict[str, list[dict]], chunks: torch.Tensor, batch_size: int = 32) -> dict:
    """All metrics of one model: ``sets`` holds the encoded ``forget``, ``retain`` and ``heldout`` facts."""
    scores = {name: fact_scores(model, samples, batch_size) for name, samples in sets.items()}
    out = {}
    for name, s in scores.items():
        out[f"{name}_acc"] = 100.0 * float(s["exact"].mean())
        out[f"{name}_first_acc"] = 100.0 * float(s["first"].mean())
        out[f"{name}_loss"] = float(s["loss"].mean())
    out["ppl"] = perplexity(model, chunks)
    out["mia_auc"] = mia_auc(scores["forget"]["loss"], scores["heldout"]["loss"])
    return out
