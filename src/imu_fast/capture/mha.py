"""nn.MultiheadAttention: per-sample gradients of its in-projection and out-projection.

The module computes its projections inside ``F.multi_head_attention_forward``, out of reach of
hooks (``out_proj`` is never called as a module). During capture its forward is replaced by an
equivalent one: the projections run here, each tapped, and the attention core runs in
``F.multi_head_attention_forward`` itself with identity projections (multiplying by an identity
matrix is exact in floating point), so masks, causal flags, dropout, ``bias_k``/``bias_v`` and
``add_zero_attn`` behave exactly as in the module. Inside, tensors are (L, N, E): the batch is axis 1.

Parameters: ``in_proj_weight`` / ``in_proj_bias`` (q, k and v stacked by rows: one outer product for
self-attention, three row blocks otherwise), ``q_proj_weight`` / ``k_proj_weight`` /
``v_proj_weight`` when kdim or vdim differ from embed_dim, and ``out_proj.weight`` /
``out_proj.bias``. ``bias_k`` and ``bias_v`` have no rule.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .combined import RowBlocksTerm, combine_uses
from .registry import register
from .rules import _cat_tokens
from .terms import OuterTerm, VectorTerm

_PARAMS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight",
           "out_proj.weight", "out_proj.bias")


def _batch_first_to_seq_first(query, key, value):
    """The module's own transposition for batch_first inputs, keeping ``query is key is value``."""
    if key is value:
        if query is key:
            query = key = value = query.transpose(1, 0)
        else:
            query, key = (x.transpose(1, 0) for x in (query, key))
            value = key
    else:
        query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    return query, key, value


def _chunks3(t: torch.Tensor | None):
    return (None, None, None) if t is None else t.chunk(3)


def _projections(m: nn.MultiheadAttention, query, key, value, tap):
    if m._qkv_same_embed_dim:
        if query is key and key is value:
            qkv = tap("qkv", query, F.linear(query, m.in_proj_weight, m.in_proj_bias), 1)
            return qkv.chunk(3, dim=-1)
        weights = m.in_proj_weight.chunk(3)
    else:
        weights = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
    biases = _chunks3(m.in_proj_bias)
    return tuple(tap(piece, x, F.linear(x, w, b), 1)
                 for piece, x, w, b in zip("qkv", (query, key, value), weights, biases))


def capture_forward(m: nn.MultiheadAttention, tap):
    """A forward with MultiheadAttention's signature whose projections are tapped."""

    def forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if query.dim() != 3:
            raise NotImplementedError("nn.MultiheadAttention called on unbatched inputs: per-sample gradients need "
                                      "a batch axis")
        if m.batch_first:
            query, key, value = _batch_first_to_seq_first(query, key, value)
        q, k, v = _projections(m, query, key, value, tap)
        eye = torch.eye(m.embed_dim, dtype=q.dtype, device=q.device)
        context, weights = F.multi_head_attention_forward(
            q, k, v, m.embed_dim, m.num_heads, None, None, m.bias_k, m.bias_v, m.add_zero_attn, m.dropout, eye,
            None, training=m.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye,
            v_proj_weight=eye, average_attn_weights=average_attn_weights, is_causal=is_causal)
        out = tap("out", context, F.linear(context, m.out_proj.weight, m.out_proj.bias), 1)
        return (out.transpose(1, 0) if m.batch_first else out), weights

    return forward


def _joined(calls: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, output gradients) of every call of one piece, concatenated along tokens."""
    x = _cat_tokens([c.x for c in calls])
    return x, _cat_tokens([c.output_grad() for c in calls]).to(x.dtype)


@register(nn.MultiheadAttention)
class MultiheadAttentionRule:
    name = "MultiheadAttention"

    def param_names(self, module):
        names = []
        for name in _PARAMS:
            owner, _, local = name.rpartition(".")
            if getattr(module.get_submodule(owner) if owner else module, local, None) is not None:
                names.append(name)
        return names

    def install(self, module, tap):
        previous = module.__dict__.get("forward")
        module.forward = capture_forward(module, tap)  # an instance attribute shadows the class's forward

        def undo():
            if previous is None:
                del module.forward
            else:
                module.forward = previous

        return undo

    def terms(self, module, calls, wanted):
        e = module.embed_dim
        pieces = {piece: _joined(c) for piece, c in calls.items()}
        out = {}
        if "in_proj_weight" in wanted:
            uses = []
            if "qkv" in pieces:
                uses.append(OuterTerm(*pieces["qkv"], module.in_proj_weight.shape))
            if "q" in pieces:
                uses.append(RowBlocksTerm([OuterTerm(*pieces[p], torch.Size((e, e))) for p in "qkv"],
                                          module.in_proj_weight.shape))
            out["in_proj_weight"] = combine_uses(uses, module.in_proj_weight.shape)
        if "in_proj_bias" in wanted:
            sums = []
            if "qkv" in pieces:
                sums.append(pieces["qkv"][1].sum(1))
            if "q" in pieces:
                sums.append(torch.cat([pieces[p][1].sum(1) for p in "qkv"], dim=1))
            out["in_proj_bias"] = VectorTerm(sum(sums), module.in_proj_bias.shape)
        for piece in "qkv":
            name = f"{piece}_proj_weight"
            if name in wanted:
                out[name] = OuterTerm(*pieces[piece], getattr(module, name).shape)
        if "out_proj.weight" in wanted:
            out["out_proj.weight"] = OuterTerm(*pieces["out"], module.out_proj.weight.shape)
        if "out_proj.bias" in wanted:
            out["out_proj.bias"] = VectorTerm(pieces["out"][1].sum(1), module.out_proj.bias.shape)
        return out
