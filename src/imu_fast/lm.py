"""Language-model helpers: per-sequence losses and the authors' choice of influence parameters."""

from __future__ import annotations

import re

from torch import nn

from .causal_lm import IGNORE_INDEX, causal_lm_losses

__all__ = ["IGNORE_INDEX", "attention_targets", "causal_lm_losses"]
causal_lm_losses.__module__ = __name__  # its public home: how saved settings and reprs name it

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
