"""Per-sample gradient structures of one parameter in one batch, and the statistics of each.

A layer rule (rules.py) turns captured inputs and output gradients into one term per parameter:

  OuterTerm      g_i = B_i^T A_i           (Linear with token axes, Conv2d, GPT-2 Conv1D weights)
  VectorTerm     g_i given explicitly      (biases, LayerNorm/RMSNorm weights: N x P, small)
  EmbeddingTerm  g_i = sum_t e_{idx_t} B_i[t]^T   (sparse rows of an embedding table)

Every term answers the same four questions without an N x P matrix for the large parameters:
per-sample squared norms, the summed squared gradient (Fisher numerator), the summed gradient,
and per-sample dot products <g_i, M>. Results come back in the parameter's own shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import outer_dot, outer_fisher, outer_norms_sq


@dataclass
class OuterTerm:
    a: torch.Tensor  # N x T x d_in
    b: torch.Tensor  # N x T x d_out
    param_shape: torch.Size
    transposed: bool = False  # parameter stored as (d_in, d_out), as GPT-2's Conv1D does

    def _to_param(self, mat: torch.Tensor) -> torch.Tensor:
        return (mat.T if self.transposed else mat).reshape(self.param_shape)

    def _from_param(self, m: torch.Tensor) -> torch.Tensor:
        d_out, d_in = self.b.shape[2], self.a.shape[2]
        return m.reshape(d_in, d_out).T if self.transposed else m.reshape(d_out, d_in)

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return outer_norms_sq(self.a, self.b, backend=backend, route=route)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return self._to_param(outer_fisher(self.a, self.b, backend=backend))

    def grad_sum(self) -> torch.Tensor:
        flat_b = self.b.reshape(-1, self.b.shape[2])
        flat_a = self.a.reshape(-1, self.a.shape[2])
        return self._to_param(flat_b.T @ flat_a)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return outer_dot(self.a, self.b, self._from_param(m).to(self.a.dtype))

    def nbytes(self) -> int:
        return (self.a.numel() + self.b.numel()) * self.a.element_size()


@dataclass
class VectorTerm:
    g: torch.Tensor  # N x P, the per-sample gradients themselves (P is a bias or norm width)
    param_shape: torch.Size

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return (self.g * self.g).sum(1)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return (self.g * self.g).sum(0).reshape(self.param_shape)

    def grad_sum(self) -> torch.Tensor:
        return self.g.sum(0).reshape(self.param_shape)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return self.g @ m.reshape(-1).to(self.g.dtype)

    def nbytes(self) -> int:
        return self.g.numel() * self.g.element_size()


@dataclass
class EmbeddingTerm:
    idx: torch.Tensor  # N x T token ids (positions to skip already removed by masking b)
    b: torch.Tensor  # N x T x d
    num_embeddings: int
    param_shape: torch.Size

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (sample, token id) summed gradient rows: (sample of row, token id of row, rows)."""
        n, t = self.idx.shape
        sample = torch.arange(n, device=self.idx.device).repeat_interleave(t)
        keys = sample * self.num_embeddings + self.idx.reshape(-1)
        unique, inverse = torch.unique(keys, return_inverse=True)
        rows = self.b.new_zeros(unique.numel(), self.b.shape[2])
        rows.index_add_(0, inverse, self.b.reshape(-1, self.b.shape[2]))
        return unique // self.num_embeddings, unique % self.num_embeddings, rows

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        sample, _, rows = self._rows()
        out = rows.new_zeros(self.idx.shape[0])
        return out.index_add_(0, sample, (rows * rows).sum(1))

    def fisher_sum(self, backend: str) -> torch.Tensor:
        _, token, rows = self._rows()
        out = rows.new_zeros(self.num_embeddings, rows.shape[1])
        return out.index_add_(0, token, rows * rows).reshape(self.param_shape)

    def grad_sum(self) -> torch.Tensor:
        out = self.b.new_zeros(self.num_embeddings, self.b.shape[2])
        return out.index_add_(0, self.idx.reshape(-1), self.b.reshape(-1, self.b.shape[2])).reshape(self.param_shape)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(self.num_embeddings, -1).to(self.b.dtype)
        return (m[self.idx] * self.b).sum((1, 2))

    def nbytes(self) -> int:
        return self.b.numel() * self.b.element_size() + self.idx.numel() * 8
