"""Terms of parameters whose per-sample gradient is assembled from several pieces.

``RowBlocksTerm``  a parameter whose row blocks come from different computations (the packed
                   q/k/v in-projection of nn.MultiheadAttention when query, key and value differ).
``combine_uses``   a parameter used in several places (tied embeddings: GPT-2, Llama-3.2, SmolLM2
                   and Gemma tie lm_head to the input embedding). The per-sample gradient is the
                   *sum* over every use, g_i = sum_u g_i^u, so its norm and square need the cross
                   terms 2 <g_i^u, g_i^v>, not only each use's own statistics:
                   - uses of one kind merge exactly (outer products concatenate along tokens,
                     embedding lookups likewise);
                   - an embedding plus an output projection (the tied LM head) has sparse cross
                     terms: only the rows of tokens that occur in a sample;
                   - anything else forms per-sample gradients a few samples at a time, within a
                     fixed memory budget (never N x P).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .terms import EmbeddingTerm, OuterTerm

DENSE_BUDGET = 256 << 20  # bytes of per-sample gradients formed at once by the generic fallback


def _cat_tokens(parts: list[torch.Tensor]) -> torch.Tensor:
    dtype = parts[0].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.to(dtype) for p in parts], dim=1) if len(parts) > 1 else parts[0]


@dataclass
class RowBlocksTerm:
    """A parameter whose consecutive row blocks have terms of their own (each block's param_shape)."""

    parts: list
    param_shape: torch.Size

    @property
    def n(self) -> int:
        return self.parts[0].n

    def _blocks(self, flat_rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([r.reshape(p.param_shape[0], -1) for r, p in zip(flat_rows, self.parts)]).reshape(
            self.param_shape)

    def _split(self, m: torch.Tensor) -> list[torch.Tensor]:
        m = m.reshape(self.param_shape[0], -1)
        return list(torch.split(m, [p.param_shape[0] for p in self.parts]))

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return sum(p.norm_sq(backend, route) for p in self.parts)

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return self._blocks([p.fisher_sum(backend) for p in self.parts])

    def grad_sum(self) -> torch.Tensor:
        return self._blocks([p.grad_sum() for p in self.parts])

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return sum(p.dot(block) for p, block in zip(self.parts, self._split(m)))

    def dense(self, rows: slice) -> torch.Tensor:
        return torch.cat([p.dense(rows) for p in self.parts], dim=1)

    @property
    def linear_family(self) -> bool:
        return all(p.linear_family for p in self.parts)

    def _row_offsets(self) -> list[int]:
        offsets, start = [], 0
        for p in self.parts:
            offsets.append(start)
            start += p.param_shape[0]
        return offsets

    def kron_sketch(self, p_in: torch.Tensor, p_out: torch.Tensor, backend: str) -> torch.Tensor:
        """P_out^T g_i P_in over stacked row blocks: the sum of each block's with its rows of P_out."""
        return sum(p.kron_sketch(p_in, p_out[r0:r0 + p.param_shape[0]], backend)
                   for p, r0 in zip(self.parts, self._row_offsets()))

    def jl_sketch(self, project) -> torch.Tensor:
        cols = self.param_shape.numel() // self.param_shape[0]
        return sum(p.jl_sketch(_shifted(project, r0 * cols)) for p, r0 in zip(self.parts, self._row_offsets()))

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)


class _shifted:
    """A projection whose column offsets start ``by`` columns further on."""

    def __init__(self, project, by: int):
        self.project, self.by, self.k = project, by, project.k

    def __call__(self, x: torch.Tensor, col0: int) -> torch.Tensor:
        return self.project(x, col0 + self.by)


class _SumOfUses:
    """Linear statistics of a sum are sums; the quadratic ones are each use's plus cross terms."""

    parts: list

    @property
    def n(self) -> int:
        return self.parts[0].n

    def grad_sum(self) -> torch.Tensor:
        return sum(p.grad_sum() for p in self.parts)

    def dot(self, m: torch.Tensor) -> torch.Tensor:
        return sum(p.dot(m) for p in self.parts)

    def dense(self, rows: slice) -> torch.Tensor:
        return sum(p.dense(rows) for p in self.parts)

    @property
    def linear_family(self) -> bool:
        # Kronecker-sketched when every use has the structured form and one is a linear layer.
        return all(hasattr(p, "kron_sketch") for p in self.parts) and any(p.linear_family for p in self.parts)

    def kron_sketch(self, p_in: torch.Tensor, p_out: torch.Tensor, backend: str) -> torch.Tensor:
        return sum(p.kron_sketch(p_in, p_out, backend) for p in self.parts)  # sketches are linear in g_i

    def jl_sketch(self, project) -> torch.Tensor:
        return sum(p.jl_sketch(project) for p in self.parts)

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)


@dataclass
class EmbeddingPlusOuterTerm(_SumOfUses):
    """g_i = E_i + L_i for a table used both as an embedding (E_i: rows of the sample's tokens) and
    as an output projection (L_i = B_i^T A_i, rows = table rows): the tied LM head.

    ||g_i||^2 = ||E_i||^2 + ||L_i||^2 + 2 sum_{v in tokens(i)} E_i[v] . L_i[v], and the Fisher sum
    gains 2 E_i[v] * L_i[v] on those rows only. ``outer`` is any term with ``rows_for(i, ids)``
    giving L_i[ids] (an OuterTerm, or the chunked cross-entropy head term)."""

    embedding: EmbeddingTerm
    outer: object
    param_shape: torch.Size

    @property
    def parts(self) -> list:
        return [self.embedding, self.outer]

    def _cross(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample cross terms sum_v E_i[v] . L_i[v], rows of sum_i E_i * L_i)."""
        sample, token, rows = self.embedding.rows()
        per_sample = rows.new_zeros(self.n)
        fisher_rows = torch.zeros_like(rows)
        counts = torch.bincount(sample, minlength=self.n).tolist()
        start = 0
        for i, count in enumerate(counts):
            if count:
                ids = token[start:start + count]
                emb = rows[start:start + count]
                product = emb * self.outer.rows_for(i, ids).to(rows.dtype)  # E_i[v] * L_i[v], the sample's tokens
                per_sample[i] = product.sum()
                fisher_rows[start:start + count] = product
                start += count
        fisher = rows.new_zeros(self.embedding.num_embeddings, rows.shape[1]).index_add_(0, token, fisher_rows)
        return per_sample, fisher

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        cross, _ = self._cross()
        return self.embedding.norm_sq(backend) + self.outer.norm_sq(backend, route) + 2 * cross

    def fisher_sum(self, backend: str) -> torch.Tensor:
        _, cross = self._cross()
        return self.embedding.fisher_sum(backend) + self.outer.fisher_sum(backend) + 2 * cross.reshape(
            self.param_shape)


@dataclass
class DenseSumTerm(_SumOfUses):
    """Any other sum of uses: per-sample gradients formed a few samples at a time (bounded memory)."""

    parts: list
    param_shape: torch.Size

    def _chunks(self):
        per_sample = self.param_shape.numel() * 8
        step = max(1, DENSE_BUDGET // per_sample)
        for start in range(0, self.n, step):
            yield self.dense(slice(start, min(self.n, start + step)))

    def norm_sq(self, backend: str, route: str = "auto") -> torch.Tensor:
        return torch.cat([(g * g).sum(1) for g in self._chunks()])

    def fisher_sum(self, backend: str) -> torch.Tensor:
        return sum((g * g).sum(0) for g in self._chunks()).reshape(self.param_shape)


def combine_uses(parts: list, param_shape: torch.Size):
    """One term for a parameter used by every term of ``parts`` (see the module docstring)."""
    outers = [p for p in parts if isinstance(p, OuterTerm)]
    embeddings = [p for p in parts if isinstance(p, EmbeddingTerm)]
    merged = []
    if outers:
        rows = {p.b.shape[2] for p in outers}
        if len(rows) == 1:
            merged.append(OuterTerm(_cat_tokens([p.a for p in outers]), _cat_tokens([p.b for p in outers]),
                                    param_shape))
        else:
            merged.extend(outers)
    if embeddings:
        merged.append(EmbeddingTerm(torch.cat([p.idx for p in embeddings], dim=1),
                                    _cat_tokens([p.b for p in embeddings]), embeddings[0].num_embeddings,
                                    param_shape))
    merged.extend(p for p in parts if not isinstance(p, (OuterTerm, EmbeddingTerm)))
    if len(merged) == 1:
        return merged[0]
    tables = [p for p in merged if isinstance(p, EmbeddingTerm)]
    projections = [p for p in merged if hasattr(p, "rows_for")]
    if len(merged) == 2 and len(tables) == 1 and len(projections) == 1:
        if projections[0].table_rows == tables[0].num_embeddings:
            return EmbeddingPlusOuterTerm(tables[0], projections[0], param_shape)
    return DenseSumTerm(merged, param_shape)

