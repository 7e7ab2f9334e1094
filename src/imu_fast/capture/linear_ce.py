"""Cross-entropy through a vocabulary-sized output layer without ever holding the N x T x V logits.

For an LM head z_t = W h_t + b over V = 50k-150k words and T tokens per sequence, a plain step holds
the logits and their gradient in full. Here both are formed one block of (rows x vocabulary chunk)
at a time, so memory stays at the hidden states plus one block:

  forward   lse_t = log sum_v exp(z_tv), with a running max and sum over vocabulary chunks;
            loss_i = sum_t w_it (lse_t - z_t,y_t)   (w_it = 1 / #valid tokens of sequence i, 0 if ignored)
  backward  e_tv = (exp(z_tv - lse_t) - [v = y_t]) s_it with s = w * dL/dloss_i, block by block:
            dL/dh_t = sum_v e_tv W_v,  dL/dW = sum_t e_t h_t^T,  dL/db = sum_t e_t

The per-sample gradient of W is g_i = E_i^T H_i, an outer-product term whose output side E_i is
recomputed a vocabulary chunk at a time (``HeadCETerm``), so its Fisher diagonal, norms and dot
products run the outer-product kernels chunk by chunk. Inside a capture session the function
provides that term itself (see ``engine``): the layer's own rule would need the full logits.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..ops import kron_sketch, outer_dot, outer_fisher, outer_norms_sq
from .engine import active_session

BLOCK_ELEMENTS = 1 << 24  # elements of one (rows x vocabulary chunk) block of logits: 64 MiB in float32


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _chunk(rows: int, vocab: int) -> int:
    return max(1, min(vocab, BLOCK_ELEMENTS // max(rows, 1)))


def _logits(h: torch.Tensor, weight: torch.Tensor, bias, v0: int, v1: int) -> torch.Tensor:
    dtype = _compute_dtype(h)
    z = h.to(dtype) @ weight[v0:v1].to(dtype).T
    return z if bias is None else z + bias[v0:v1].to(dtype)


def log_sum_exp(h: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """(R,) log sum_v exp(z_v) for rows h (R x d), one vocabulary chunk at a time."""
    vocab = weight.shape[0]
    step = _chunk(h.shape[0], vocab)
    running_max = running_sum = None
    for v0 in range(0, vocab, step):
        z = _logits(h, weight, bias, v0, min(vocab, v0 + step))
        top = z.max(dim=1).values
        if running_max is None:
            running_max, running_sum = top, torch.exp(z - top[:, None]).sum(1)
            continue
        new_max = torch.maximum(running_max, top)
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(z - new_max[:, None]).sum(1)
        running_max = new_max
    return running_max + torch.log(running_sum)


def residuals(h, weight, bias, lse, targets, scale, v0: int, v1: int) -> torch.Tensor:
    """e = (softmax(z) - onehot(y)) * scale for vocabulary rows [v0, v1): (R x (v1 - v0))."""
    e = torch.exp(_logits(h, weight, bias, v0, v1) - lse[:, None])
    inside = (targets >= v0) & (targets < v1)
    rows = inside.nonzero().flatten()
    e[rows, targets[rows] - v0] -= 1
    return e * scale[:, None].to(e.dtype)


@dataclass
class HeadCETerm:
    """g_i = E_i^T A_i for the output layer under cross-entropy, E_i recomputed per vocabulary chunk.

    ``a`` is the head's input for its weight (N x T x d) or ones for its bias (N x T x 1)."""

    a: torch.Tensor
    h: torch.Tensor  # N x T x d: the head's input, for the logits
    weight: torch.Tensor  # V x d
    bias: torch.Tensor | None
    lse: torch.Tensor  # N x T
    targets: torch.Tensor  # N x T, ignored tokens carry scale 0
    scale: torch.Tensor  # N x T
    param_shape: torch.Size

    @property
    def n(self) -> int:
        return self.a.shape[0]

    @property
    def table_rows(self) -> int:
        return self.weight.shape[0]

    def _chunks(self, rows: slice = slice(None)):
        """(v0, v1, E block of shape (n, T, v1 - v0)) for every vocabulary chunk, samples ``rows``."""
        h, lse, y, s = self.h[rows], self.lse[rows], self.targets[rows], self.scale[rows]
        n, t = lse.shape
        flat = (h.reshape(n * t, -1), lse.reshape(-1), y.reshape(-1), s.reshape(-1))
        step = _chunk(n * t, self.table_rows)
        for v0 in range(0, self.table_rows, step):
            v1 = min(self.table_rows, v0 + step)
            yield v0, v1, residuals(flat[0], self.weight, self.bias, *flat[1:], v0, v1).reshape(n, t, v1 - v0)

    def _a(self, e: torch.Tensor) -> torch.Tensor:
        return self.a.to(e.dtype)

    def _rows_filled(self, block) -> torch.Tensor:
        """(V x k) filled chunk by chunk with ``block(v0, v1, e)`` (no list of blocks, no concatenation)."""
        out = None
        for v0, v1, e in self._chunks():
            rows = block(v0, v1, e)
            if out is None:
                out = rows.new_empty(self.table_rows, rows.shape[1])
            out[v0:v1] = rows
        return out.reshape(self.param_shape)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return self._rows_filled(lambda v0, v1, e: outer_fisher(self._a(e), e, backend=backend))

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return sum(outer_norms_sq(self._a(e), e, backend=backend, route=route) for _, _, e in self._chunks())

    def grad_sum(self) -> torch.Tensor:
        return self._rows_filled(lambda v0, v1, e: e.reshape(-1, e.shape[2]).T @ self._a(e).reshape(-1, self.a.shape[2]))

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(self.table_rows, -1)
        return sum(outer_dot(self._a(e), e, m[v0:v1].to(e.dtype)) for v0, v1, e in self._chunks())

    def rows_for(self, i: int, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of sample i's gradient: E_i[:, ids]^T A_i (len(ids) x k)."""
        dtype = _compute_dtype(self.h)
        z = self.h[i].to(dtype) @ self.weight[ids].to(dtype).T
        if self.bias is not None:
            z = z + self.bias[ids].to(dtype)
        e = torch.exp(z - self.lse[i][:, None]) - (self.targets[i][:, None] == ids[None, :]).to(dtype)
        return (e * self.scale[i][:, None].to(dtype)).T @ self.a[i].to(dtype)

    def dense(self, rows: slice) -> torch.Tensor:
        blocks = [torch.bmm(e.mT, self._a(e)[rows]) for _, _, e in self._chunks(rows)]
        return torch.cat(blocks, dim=1).reshape(blocks[0].shape[0], -1)

    @property
    def linear_family(self) -> bool:
        return len(self.param_shape) == 2  # the weight; the bias (a vector) is sketched by JL

    def kron_sketch(self, p_in: torch.Tensor, p_out: torch.Tensor, backend: str) -> torch.Tensor:
        """Sum over vocabulary chunks of (E_i P_out[chunk])^T (A_i P_in)."""
        return sum(kron_sketch(self._a(e), e, p_in, p_out[v0:v1], backend=backend) for v0, v1, e in self._chunks())

    def jl_sketch(self, project) -> torch.Tensor:
        cols = self.a.shape[2]
        out = None
        for v0, v1, e in self._chunks():
            a = self._a(e)
            step = max(1, (32 << 20) // max(1, self.n * cols * e.element_size()))
            for r0 in range(0, v1 - v0, step):
                g = torch.bmm(e[:, :, r0:r0 + step].mT, a).reshape(self.n, -1)  # rows v0 + r0 .. of every g_i
                part = project(g, (v0 + r0) * cols)
                out = part if out is None else out.add_(part)
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.a, self.h, self.lse, self.targets, self.scale))


def head_terms(h, weight, bias, lse, targets, scale) -> dict[str, HeadCETerm]:
    """The weight's (and bias's) terms for hidden states ``h`` (N x T x d) and per-token ``scale``."""
    common = dict(h=h, weight=weight.detach(), bias=None if bias is None else bias.detach(), lse=lse,
                  targets=targets, scale=scale)
    terms = {"weight": HeadCETerm(a=h, param_shape=weight.shape, **common)}
    if bias is not None:
        terms["bias"] = HeadCETerm(a=h.new_ones(h.shape[0], h.shape[1], 1), param_shape=bias.shape, **common)
    return terms


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, token_weights, anchor, session):
        n, t, d = h.shape
        flat = h.reshape(n * t, d)
        lse = log_sum_exp(flat, weight, bias)
        y = targets.reshape(-1).clamp_min(0)
        target_logit = (flat.to(lse.dtype) * weight[y].to(lse.dtype)).sum(1)
        if bias is not None:
            target_logit = target_logit + bias[y].to(lse.dtype)
        losses = ((lse - target_logit).reshape(n, t) * token_weights.to(lse.dtype)).sum(1)
        ctx.save_for_backward(h, weight, bias, targets, token_weights, lse.reshape(n, t))
        ctx.session = session
        return losses  # in float32 at least

    @staticmethod
    def backward(ctx, grad_losses):
        h, weight, bias, targets, token_weights, lse = ctx.saved_tensors
        session = ctx.session
        scale = token_weights.to(lse.dtype) * grad_losses[:, None].to(lse.dtype)
        y = targets.clamp_min(0)
        if session is not None:
            for local, term in head_terms(h.detach(), weight, bias, lse, y, scale).items():
                session.provide(weight if local == "weight" else bias, term)
        want_weight = ctx.needs_input_grad[1] and (session is None or session.wants_gradient(weight))
        want_bias = bias is not None and ctx.needs_input_grad[2] and (session is None or session.wants_gradient(bias))
        n, t, d = h.shape
        flat, flat_lse, flat_y, flat_s = h.reshape(n * t, d), lse.reshape(-1), y.reshape(-1), scale.reshape(-1)
        dh = torch.zeros(n * t, d, dtype=lse.dtype, device=h.device) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(weight.shape, dtype=lse.dtype, device=h.device) if want_weight else None
        db = torch.zeros(bias.shape, dtype=lse.dtype, device=h.device) if want_bias else None
        vocab = weight.shape[0]
        step = _chunk(n * t, vocab)
        for v0 in range(0, vocab, step):
            v1 = min(vocab, v0 + step)
            e = residuals(flat, weight, bias, flat_lse, flat_y, flat_s, v0, v1)
            if dh is not None:
                dh += e @ weight[v0:v1].to(e.dtype)
            if dw is not None:
                dw[v0:v1] = e.T @ flat.to(e.dtype)
            if db is not None:
                db[v0:v1] = e.sum(0)
        anchor_grad = torch.zeros((), device=h.device) if ctx.needs_input_grad[5] else None
        return (None if dh is None else dh.reshape(n, t, d).to(h.dtype), None if dw is None else dw.to(weight.dtype),
                None if db is None else db.to(bias.dtype), None, None, anchor_grad, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                         token_weights: torch.Tensor) -> torch.Tensor:
    """Per-sequence losses sum_t w_it CE(W h_it + b, y_it), (N,), never forming N x T x V logits.

    ``h``: N x T x d; ``targets``: N x T class ids (any value where ``token_weights`` is 0)."""
    if h.dim() != 3 or targets.shape != h.shape[:2] or token_weights.shape != h.shape[:2]:
        raise ValueError(f"expected hidden states (N, T, d) with targets and token weights (N, T), got "
                         f"{tuple(h.shape)}, {tuple(targets.shape)}, {tuple(token_weights.shape)}")
    session = active_session()
    anchor = None
    if session is not None:
        anchors = [session.expect(p) for p in (weight, bias) if p is not None]
        anchor = next((a for a in anchors if a is not None), None)
        if anchor is None:
            session = None  # nothing of this head is selected: plain autograd
    return _LinearCrossEntropy.apply(h, weight, bias, targets, token_weights, anchor, session)


@contextmanager
def head_bypassed(head: nn.Module):
    """Inside, ``head`` records its input and returns a zero-width tensor instead of the logits (the
    caller computes what it needs from the input); an active capture session is told so."""
    seen: dict[str, torch.Tensor] = {}
    session = active_session()

    def forward(x):
        seen["h"] = x
        if session is not None:
            session.bypass(head)
        return x.new_zeros(*x.shape[:-1], 0)

    previous = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield seen
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous
