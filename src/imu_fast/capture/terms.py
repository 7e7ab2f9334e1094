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

Sketches are two more statistics (``imu_fast.sketch``). A parameter viewed as a matrix
(rows = its first axis) answers ``kron_sketch(p_in, p_out)``, the per-sample P_out^T g_i P_in
(N x k_out x k_in), when it is ``linear_family``; every term answers ``jl_sketch(project)``, the
per-sample JL projection: ``project(x, col0)`` projects rows x of consecutive flat columns from
col0 on (N x k), and the term hands it its gradients a bounded tile of columns at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import kron_sketch, outer_dot, outer_fisher, outer_norms_sq
from ..ops._launch import result_dtype

JL_TILE_BYTES = 32 << 20  # per-sample gradient columns formed at once for a JL projection


def _rows_per_tile(n: int, cols: int, element_size: int) -> int:
    return max(1, JL_TILE_BYTES // max(1, n * cols * element_size))


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

    linear_family = True

    def kron_sketch(self, p_in: torch.Tensor, p_out: torch.Tensor, backend: str) -> torch.Tensor:
        return kron_sketch(self.a, self.b, p_in, p_out, backend=backend)

    def jl_sketch(self, project) -> torch.Tensor:
        n, rows, cols = self.n, self.b.shape[2], self.a.shape[2]
        step = _rows_per_tile(n, cols, self.a.element_size())
        out = None
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            g = torch.bmm(self.b[:, :, r0:r1].mT, self.a).reshape(n, -1)  # rows r0..r1 of every g_i
            part = project(g, r0 * cols)
            out = part if out is None else out.add_(part)
        return out

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

    linear_family = False

    def jl_sketch(self, project) -> torch.Tensor:
        step = max(1, JL_TILE_BYTES // max(1, self.n * self.g.element_size()))
        out = None
        for c0 in range(0, self.g.shape[1], step):
            part = project(self.g[:, c0:c0 + step], c0)
            out = part if out is None else out.add_(part)
        return out

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

    linear_family = False  # embeddings are sketched by JL; kron_sketch serves a table tied to an output layer

    def kron_sketch(self, p_in: torch.Tensor, p_out: torch.Tensor, backend: str) -> torch.Tensor:
        """P_out^T g_i P_in = sum_t P_out[idx_t]^T (B_i[t] P_in): the rows of the sample's tokens only."""
        p_in, p_out = p_in.to(self.b.dtype), p_out.to(self.b.dtype)
        return p_out[self.idx].mT @ (self.b @ p_in)

    def jl_sketch(self, project) -> torch.Tensor:
        """Each (sample, token) row of g_i lies in the token's d columns: project the rows of one
        token id at a time (the sign matrix's columns of that row of the table)."""
        sample, token, rows = self.rows()
        d = rows.shape[1]
        order = torch.argsort(token, stable=True)
        ids, counts = torch.unique_consecutive(token[order], return_counts=True)
        out = None
        for v, chunk in zip(ids.tolist(), torch.split(order, counts.tolist())):
            part = project(rows[chunk], v * d)
            if out is None:
                out = part.new_zeros(self.n, part.shape[1])
            out.index_add_(0, sample[chunk], part)
        return out if out is not None else rows.new_zeros(self.n, project.k, dtype=result_dtype(rows.dtype))

    def nbytes(self) -> int:
        return self.b.numel() * self.b.element_size() + self.idx.numel() * 8
