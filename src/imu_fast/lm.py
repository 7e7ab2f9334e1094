"""Language-model helpers: per-sequence losses and the authors' choice of influence parameters."""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from .errors import BatchPositionsError
from .model_io import logits_of

IGNORE_INDEX = -100


def causal_lm_losses(model: nn.Module, batch: dict) -> torch.Tensor:
    """Per-sequence next-token cross-entropy, averaged over valid tokens (labels == -100 ignored).

    ``batch`` holds ``input_ids``, optionally ``attention_mask`` and ``labels`` (default: the
    input ids with padding positions set to -100). Labels are shifted inside, as Hugging Face
    causal LMs expect.
    """
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise TypeError("causal_lm_losses expects a dict batch with 'input_ids' (and optionally 'attention_mask', 'labels')")
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    labels = batch.get("labels")
    if labels is None:
        labels = input_ids if mask is None else input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    logits = logits_of(model(input_ids=input_ids, attention_mask=mask))
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    per_token = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    valid = (shift_labels != IGNORE_INDEX).sum(1)
    empty = (valid == 0).nonzero().flatten()
    if empty.numel():
        raise BatchPositionsError("sequences have no token to predict (all labels -100)", empty.tolist())
    return per_token.sum(1) / valid


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def attention_targets(model: nn.Module, layers) -> list[str]:
    """Names of the q/k/v/o projection weights of the given decoder layers (the authors' LM choice).

    Recognises Llama-style ``layers.{i}.self_attn.{q,k,v,o}_proj`` (and ``layers.{i}.attention``, as
    transformers' ViT names them) and GPT-2-style ``h.{i}.attn.{c_attn,c_proj}`` naming.
    """
    names = [name for name, _ in model.named_parameters()]
    chosen = []
    for layer in layers:
        pattern = re.compile(rf"(^|\.)(layers|h)\.{int(layer)}\.(self_attn|attn|attention)\.(\w+)\.weight$")
        hits = [n for n in names if (m := pattern.search(n)) and m.group(4) in (*_PROJECTIONS, "c_attn", "c_proj")]
        if not hits:
            raise ValueError(f"found no attention projection weights for decoder layer {layer}")
        chosen.extend(hits)
    return chosen
