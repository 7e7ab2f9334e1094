"""Per-sample gradient structures of one parameter in one batch, and the statistics of each.

A layer rule (rules.py) turns captured inputs and output gradients into one term per parameter:

  OuterTerm      g_i = B_i^T A_i           (Linear with token axes, Conv2d, GPT-2 Conv1D weights)
  VectorTerm     g_i given explicitly      (biases, LayerNorm/RMSNorm weights: N x P, small)
  EmbeddingTerm  g_i = sum_t e_{idx_t} B_i[t]^T   (sparse rows of an embedding table)

Every term answers the same questions without an N x P matrix for the large parameters:
per-sample squared norms, the summed squared gradient (Fisher numerator), the summed gradient,
and per-sample dot products <g_i, M>; results come back in the parameter's own shape. ``dense``
forms the per-sample gradients of a few samples at once, for the rare combinations (combined.py)
that have no structured formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import outer_dot, outer_fisher, outer_norms_sq


@dataclass
class OuterTerm:
    """g_i = b_i^T a_i in the parameter's own layout: ``b`` (N x T x rows), ``a`` (N x T x cols)."""

    a: torch.Tensor
    b: torch.Tensor
    param_shape: torch.Size

    @property
    def n(self) -> int:
        return self.a.shape[0]

    @property
    def table_rows(self) -> int:
        return self.b.shape[2]

    def rows_for(self, i: int, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of sample i's gradient: B_i[:, ids]^T A_i (len(ids) x cols)."""
        return self.b[i][:, ids].mT @ self.a[i].to(self.b.dtype)

    def _as_matrix(self, m: torch.Tensor) -> torch.Tensor:
        return m.reshape(self.b.shape[2], self.a.shape[2])

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return outer_norms_sq(self.a, self.b, backend=backend, route=route)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return outer_fisher(self.a, self.b, backend=backend).reshape(self.param_shape)

    def grad_sum(self) -> torch.Tensor:
        flat_b = self.b.reshape(-1, self.b.shape[2])
        flat_a = self.a.reshape(-1, self.a.shape[2])
        return (flat_b.T @ flat_a).reshape(self.param_shape)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return outer_dot(self.a, self.b, self._as_matrix(m).to(self.a.dtype))

    def dense(self, rows: slice) -> torch.Tensor:
        return torch.bmm(self.b[rows].mT, self.a[rows]).reshape(-1, self.param_shape.numel())

    def nbytes(self) -> int:
        return (self.a.numel() + self.b.numel()) * self.a.element_size()


@dataclass
class VectorTerm:
    g: torch.Tensor  # N x P, the per-sample gradients themselves (P is a bias or norm width)
    param_shape: torch.Size

    @property
    def n(self) -> int:
        return self.g.shape[0]

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return (self.g * self.g).sum(1)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return (self.g * self.g).sum(0).reshape(self.param_shape)

    def grad_sum(self) -> torch.Tensor:
        return self.g.sum(0).reshape(self.param_shape)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return self.g @ m.reshape(-1).to(self.g.dtype)

    def dense(self, rows: slice) -> torch.Tensor:
        return self.g[rows]

    def nbytes(self) -> int:
        return self.g.numel() * self.g.element_size()


@dataclass
class EmbeddingTerm:
    idx: torch.Tensor  # N x T token ids (positions to skip already removed by masking b)
    b: torch.Tensor  # N x T x d
    num_embeddings: int
    param_shape: torch.Size

    @property
    def n(self) -> int:
        return self.idx.shape[0]

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (sample, token id) summed gradient rows: (sample of row, token id of row, rows), sorted
        by sample, then token id."""
        n, t = self.idx.shape
        sample = torch.arange(n, device=self.idx.device).repeat_interleave(t)
        keys = sample * self.num_embeddings + self.idx.reshape(-1)
        unique, inverse = torch.unique(keys, return_inverse=True)
        rows = self.b.new_zeros(unique.numel(), self.b.shape[2])
        rows.index_add_(0, inverse, self.b.reshape(-1, self.b.shape[2]))
        return unique // self.num_embeddings, unique % self.num_embeddings, rows

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        sample, _, rows = self.rows()
        out = rows.new_zeros(self.idx.shape[0])
        return out.index_add_(0, sample, (rows * rows).sum(1))

    def fisher_sum(self, backend: str) -> torch.Tensor:
        _, token, rows = self.rows()
        out = rows.new_zeros(self.num_embeddings, rows.shape[1])
        return out.index_add_(0, token, rows * rows).reshape(self.param_shape)

    def grad_sum(self) -> torch.Tensor:
        out = self.b.new_zeros(self.num_embeddings, self.b.shape[2])
        return out.index_add_(0, self.idx.reshape(-1), self.b.reshape(-1, self.b.shape[2])).reshape(self.param_shape)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(self.num_embeddings, -1).to(self.b.dtype)
        return (m[self.idx] * self.b).sum((1, 2))

    def dense(self, rows: slice) -> torch.Tensor:
        idx, b = self.idx[rows], self.b[rows]
        n, t = idx.shape
        local = torch.arange(n, device=idx.device).repeat_interleave(t)
        out = b.new_zeros(n * self.num_embeddings, b.shape[2])
        out.index_add_(0, local * self.num_embeddings + idx.reshape(-1), b.reshape(-1, b.shape[2]))
        return out.reshape(n, -1)

    def nbytes(self) -> int:
        return self.b.numel() * self.b.element_size() + self.idx.numel() * 8
