"""Which sketch columns belong to which parameter, and the projections behind them.

A layout is a list of blocks, one per selected parameter, in selection order:

  kronecker  columns start..stop hold vec(P_out^T g_i P_in) (k_out x k_in, row-major) for a
             weight viewed as a matrix (rows = its first axis, cols = the rest): P_out acts on
             its rows, P_in on its columns (nn.Linear: d_out x d_in; GPT-2 Conv1D, stored
             d_in x d_out, is projected as stored)
  jl         columns start..stop hold R g_i, R the parameter's own k x P sign matrix (ops.philox);
             with kind="jl" every parameter's block spans the same columns 0..dim and the
             projections add up (one JL projection of the concatenated gradient)
  exact      columns start..stop hold g_i itself (a parameter no wider than its sketch)

Every projection is a function of (seed, the parameter's stream, a role): the stream is the
CRC-32 of the parameter's name, so a parameter's projection does not depend on what else is
selected. A Kronecker factor whose side is no wider than its k is the identity.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict, dataclass

import torch

from ..ops import jl_project
from ..ops._launch import DEFAULT_PRECISION
from ..ops.philox import ROLE_IN, ROLE_JL, ROLE_OUT
from .config import SketchConfig


def stream_of(name: str) -> int:
    return zlib.crc32(name.encode())


@dataclass(frozen=True)
class SketchBlock:
    name: str
    kind: str  # "kronecker" | "jl" | "exact"
    start: int
    stop: int
    shape: tuple[int, ...]  # the parameter's shape
    k_in: int = 0  # kronecker: columns of P_in (cols of the matrix view, if no wider)
    k_out: int = 0  # kronecker: columns of P_out

    @property
    def width(self) -> int:
        return self.stop - self.start

    @property
    def matrix(self) -> tuple[int, int]:
        rows = self.shape[0]
        return rows, math.prod(self.shape) // rows

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SketchBlock":
        return cls(**{**data, "shape": tuple(data["shape"])})


def block_kind(config: SketchConfig, shape: torch.Size, term) -> tuple[str, int, int]:
    """(kind, k_in, k_out) of one parameter from its shape and the first term the capture gave
    (kind="jl" decides between one shared projection and keeping everything exactly in ``build``)."""
    numel = math.prod(shape)
    if config.kind == "jl":
        return "jl", 0, 0
    if len(shape) >= 2 and getattr(term, "linear_family", False):
        rows, cols = shape[0], numel // shape[0]
        return "kronecker", min(config.k_in, cols), min(config.k_out, rows)
    return ("exact" if numel <= config.other_dim else "jl"), 0, 0


class SketchLayout:
    def __init__(self, blocks: list[SketchBlock], dim: int):
        self.blocks = blocks
        self.dim = dim
        self.by_name = {b.name: b for b in blocks}
        self.shared = len(blocks) > 1 and all(b.kind == "jl" and (b.start, b.stop) == (0, dim) for b in blocks)

    @classmethod
    def build(cls, config: SketchConfig, kinds: dict[str, tuple[str, int, int]], shapes: dict[str, tuple]
              ) -> "SketchLayout":
        """Blocks in the order of ``shapes`` (the selection's), from each parameter's kind."""
        if config.kind == "jl" and sum(math.prod(s) for s in shapes.values()) > config.dim:
            return cls([SketchBlock(name, "jl", 0, config.dim, tuple(shape)) for name, shape in shapes.items()],
                       config.dim)
        blocks, start = [], 0
        for name, shape in shapes.items():
            kind, k_in, k_out = kinds[name] if config.kind == "kronecker" else ("exact", 0, 0)
            width = k_in * k_out if kind == "kronecker" else math.prod(shape) if kind == "exact" else config.other_dim
            blocks.append(SketchBlock(name, kind, start, start + width, tuple(shape), k_in, k_out))
            start += width
        return cls(blocks, start)

    def fisher_blocks(self, blocks: str) -> list[tuple[str, int, int]]:
        """(label, start, stop) of each Fisher block: per parameter, or one over every column."""
        if blocks == "all" or self.shared:
            return [("all", 0, self.dim)]
        return [(b.name, b.start, b.stop) for b in self.blocks]

    def to_list(self) -> list[dict]:
        return [b.to_dict() for b in self.blocks]

    @classmethod
    def from_list(cls, items: list[dict], dim: int) -> "SketchLayout":
        return cls([SketchBlock.from_dict(d) for d in items], dim)


FACTOR_CHUNK = 1024  # columns of a factor generated at once


@functools.lru_cache(maxsize=256)
def _factor(seed: int, stream: int, role: int, width: int, k: int) -> torch.Tensor:
    """(width x k) float64 on the CPU: R[:, :width]^T for the role's sign matrix, i.e. the JL
    projection of the identity, generated by the JL kernels a chunk of columns at a time."""
    if width <= k:
        return torch.eye(width, dtype=torch.float64)
    eye = torch.eye(min(width, FACTOR_CHUNK), dtype=torch.float64)
    parts = [jl_project(eye[:min(FACTOR_CHUNK, width - c0), :min(FACTOR_CHUNK, width - c0)], col0=c0, k=k, seed=seed,
                        stream=stream, role=role) for c0 in range(0, width, FACTOR_CHUNK)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def kron_factors(seed: int, block: SketchBlock, *, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(P_in, P_out) of a Kronecker block: (cols x k_in) and (rows x k_out), entries +-1/sqrt(k)
    (the identity for a side no wider than its k)."""
    rows, cols = block.matrix
    stream = stream_of(block.name)
    p_in = _factor(seed, stream, ROLE_IN, cols, block.k_in)
    p_out = _factor(seed, stream, ROLE_OUT, rows, block.k_out)
    return p_in.to(dtype=dtype, device=device), p_out.to(dtype=dtype, device=device)


class Projector:
    """``project(x, col0)``: the JL projection of rows x of a parameter's flat columns col0.. (N x k)."""

    def __init__(self, seed: int, name: str, k: int, backend: str, precision: str = DEFAULT_PRECISION):
        self.seed, self.stream, self.k, self.backend, self.precision = seed, stream_of(name), k, backend, precision

    def __call__(self, x: torch.Tensor, col0: int) -> torch.Tensor:
        return jl_project(x, col0=col0, k=self.k, seed=self.seed, stream=self.stream, role=ROLE_JL,
                          backend=self.backend, precision=self.precision)
