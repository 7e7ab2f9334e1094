"""The causal-LM loss and the pieces the LM-head influence route shares with it.

Per-sequence next-token cross-entropy, averaged over the sequence's valid tokens. Where the model's
logits are exactly its output layer's output, the loss never forms the N x T x V logits
(``capture.linear_ce``); otherwise it takes the logits the model returns.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F

from .capture.engine import active_session
from .capture.linear_ce import head_bypassed, linear_cross_entropy
from .errors import BatchPositionsError
from .model_io import logits_of

IGNORE_INDEX = -100
_SHORT = 8  # tokens of the one-sequence check that a model's logits are its output layer's output
_head_is_output: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def lm_inputs(batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise TypeError("causal_lm_losses expects a dict batch with 'input_ids' (and optionally 'attention_mask', "
                        "'labels')")
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    labels = batch.get("labels")
    if labels is None:
        labels = input_ids if mask is None else input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return input_ids, mask, labels


def token_weights(shift_labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 / #valid tokens of each sequence at its valid positions, 0 elsewhere (a per-sequence mean)."""
    valid = shift_labels != IGNORE_INDEX
    count = valid.sum(1)
    empty = (count == 0).nonzero().flatten()
    if empty.numel():
        raise BatchPositionsError("sequences have no token to predict (all labels -100)", empty.tolist())
    return valid.to(dtype) / count[:, None].to(dtype)


def output_layer(model: nn.Module) -> nn.Linear | None:
    """The model's vocabulary projection (``get_output_embeddings()``) if it is an ``nn.Linear``."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Linear) else None


def returns_head_logits(model: nn.Module, head: nn.Linear, input_ids, mask) -> bool:
    """Whether the model's logits are exactly its output layer's output (no soft-capping or scaling
    after it), checked once per model on a short prefix of one sequence."""
    if model in _head_is_output:
        return _head_is_output[model]
    session = active_session()
    ids = input_ids[:1, :_SHORT]
    short_mask = None if mask is None else mask[:1, :_SHORT]
    with (session.suspended() if session is not None else nullcontext()), torch.no_grad():
        logits = logits_of(model(input_ids=ids, attention_mask=short_mask))
        with head_bypassed(head) as seen:
            model(input_ids=ids, attention_mask=short_mask)
        same = "h" in seen and logits.shape[-1] == head.out_features and torch.allclose(
            head(seen["h"]), logits, rtol=1e-5, atol=1e-6)
    _head_is_output[model] = bool(same)
    return bool(same)


def causal_lm_losses(model: nn.Module, batch: dict) -> torch.Tensor:
    """Per-sequence next-token cross-entropy, averaged over valid tokens (labels == -100 ignored).

    ``batch`` holds ``input_ids``, optionally ``attention_mask`` and ``labels`` (default: the
    input ids with padding positions set to -100). Labels are shifted inside, as Hugging Face
    causal LMs expect. When the model's logits are its output layer's output (checked once per
    model), the loss runs through ``linear_cross_entropy``: the N x T x V logits are never held,
    neither forward nor backward, and per-sample statistics of the output layer work chunk by chunk.
    """
    input_ids, mask, labels = lm_inputs(batch)
    shift_labels = labels[:, 1:]
    head = output_layer(model)
    if head is not None and returns_head_logits(model, head, input_ids, mask):
        session = active_session()
        # When only the output layer is captured, nothing before it needs a graph: keep no activations.
        frozen_trunk = session is not None and session.selects_only(head)
        with head_bypassed(head) as seen, (torch.no_grad() if frozen_trunk else nullcontext()):
            model(input_ids=input_ids, attention_mask=mask)
        h = seen["h"][:, :-1]
        weights = token_weights(shift_labels, torch.promote_types(h.dtype, torch.float32))
        return linear_cross_entropy(h, head.weight, head.bias, shift_labels, weights)
    logits = logits_of(model(input_ids=input_ids, attention_mask=mask))
    shift_logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    weights = token_weights(shift_labels, shift_logits.dtype)
    per_token = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    return (per_token * weights).sum(1)
