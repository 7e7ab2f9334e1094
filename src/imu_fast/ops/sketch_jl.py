"""On-the-fly Johnson-Lindenstrauss projection of per-sample gradient columns.

    Y = X R[:, col0 : col0 + w]^T        X: N x w (w consecutive flat columns of one parameter's
                                          per-sample gradients), Y: N x k

R (k x P) is the +-1/sqrt(k) sign matrix of ``ops.philox`` for (seed, stream, role): a Rademacher
JL matrix, E[Y Y^T] = X X^T. No backend stores R: the C++ kernel and the Triton kernel generate
it one tile at a time next to the product (Philox words -> signs -> multiply-adds), the torch
backend generates tiles of at most ``TILE_ELEMENTS`` entries and multiplies them with matmul.
Entries are exact (+-scale), so backends differ only in the order of the sums. A gradient split
into column blocks gives the sum of its blocks' projections (projections are linear). On CPUs with
Intel AMX the C++ backend runs float32 X on the tile unit, X split into bfloat16 parts (three at
the default precision, float32-level accuracy: see csrc/sketch/sketch_amx.cpp).

``backend="cuda"`` runs the torch formulation on the GPU (there is no CUDA kernel: on a GPU the
Triton kernel is the fused one). A ``torch.library`` custom op (``torch.ops.imu_fast.jl_project``).
"""

from __future__ import annotations

import math

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import DEFAULT_PRECISION, NATIVE_DTYPES, check_precision, native_dtype_name, result_dtype, upcast_half
from .philox import MASK32, ROLE_JL, check_seed, projection_ref, signs_ref

TILE_ELEMENTS = 1 << 22  # torch backend: entries of R generated at once
# The C++ backend on CPUs with AMX: bfloat16 parts float32 X is split into per precision (the signs
# are exact in bfloat16; three parts carry float32's 24 bits, "ieee" takes the FMA kernel instead).
CPU_BF16_PARTS = {"tf32x3": 3, "tf32": 2, "bf16": 1, "ieee": 0}
MAX_COLUMN = 2**56  # flat columns beyond this do not fit the counter layout


def _check(x: torch.Tensor, col0: int, k: int, seed: int, stream: int, role: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"jl_project: X must be a floating-point matrix (N x w columns), got {shape}")
    for name, value, low, high in (("k", k, 1, 2**31 - 1), ("col0", col0, 0, MAX_COLUMN - x.shape[1]),
                                   ("stream", stream, 0, MASK32), ("role", role, 0, 255)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"jl_project: {name} must be an integer in [{low}, {high}], got {value!r}")
    check_seed(seed)


def jl_project_ref(x: torch.Tensor, *, col0: int = 0, k: int, seed: int, stream: int, role: int = ROLE_JL
                   ) -> torch.Tensor:
    """Reference: builds the whole k x w block of R in float64 and multiplies."""
    _check(x, col0, k, seed, stream, role)
    r = projection_ref(seed, stream, role, k, col0, x.shape[1], device=x.device)
    return (x.double() @ r.T).to(result_dtype(x.dtype))


def _jl_torch(x, col0, k, seed, stream, role):
    (x,) = upcast_half(x)
    out = x.new_zeros(x.shape[0], k)
    step = max(1, TILE_ELEMENTS // k)
    scale = 1.0 / math.sqrt(k)
    for c in range(0, x.shape[1], step):
        cols = range(col0 + c, col0 + min(x.shape[1], c + step))
        tile = signs_ref(seed, stream, role, range(k), cols, dtype=x.dtype, device=x.device)
        out.addmm_(x[:, c:c + len(cols)], tile.T, alpha=scale)
    return out


def _jl_native(x, col0, k, seed, stream, role, precision):
    (x,) = upcast_half(x)
    dtype = native_dtype_name(x, table=NATIVE_DTYPES)
    if x.stride(1) != 1 or x.stride(0) < x.shape[1]:
        x = x.contiguous()
    out = x.new_empty(x.shape[0], k)
    if x.shape[0] == 0:
        return out
    if x.shape[1] == 0:
        return out.zero_()
    native.jl_project_cpu(x.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], max(1, x.stride(0)), k, col0, seed,
                          stream, role, 1.0 / math.sqrt(k), dtype, CPU_BF16_PARTS[precision])
    return out


def _jl_impl(x, col0, k, seed, stream, role, backend, precision):
    name = resolve_backend(backend, x.device)
    if name == "cpu":
        return _jl_native(x, col0, k, seed, stream, role, precision)
    if name == "triton":
        from ..kernels.sketch_jl import jl_project_triton

        return jl_project_triton(x, col0=col0, k=k, seed=seed, stream=stream, role=role, precision=precision)
    return _jl_torch(x, col0, k, seed, stream, role)


@torch.library.custom_op("imu_fast::jl_project", mutates_args=())
def _jl_op(x: torch.Tensor, col0: int, k: int, seed: int, stream: int, role: int, backend: str,
           precision: str) -> torch.Tensor:
    return _jl_impl(x, col0, k, seed, stream, role, backend, precision)


@_jl_op.register_fake
def _(x, col0, k, seed, stream, role, backend, precision):
    return x.new_empty(x.shape[0], k, dtype=result_dtype(x.dtype))


def jl_project(x: torch.Tensor, *, col0: int = 0, k: int, seed: int, stream: int, role: int = ROLE_JL,
               backend: str = "auto", precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    """X R[:, col0 : col0 + w]^T (N x k) on the chosen backend; float32 result (float64 for float64 X).
    ``precision`` sets how float32 X meets the tensor cores (Triton) or AMX tiles (C++): tf32x3 (the
    default, float32-level accuracy), tf32, bf16, or ieee (plain float32 FMAs); the signs are exact
    in every precision."""
    _check(x, col0, k, seed, stream, role)
    check_precision(precision)
    if torch.compiler.is_compiling():
        return _jl_op(x, col0, k, seed, stream, role, backend, precision)
    return _jl_impl(x, col0, k, seed, stream, role, backend, precision)  # eager: no custom-op dispatch
