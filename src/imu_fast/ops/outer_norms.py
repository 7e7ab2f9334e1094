"""Per-sample gradient norms of a linear-family layer: ||g_i||^2 with g_i = B_i^T A_i.

Two exact routes, chosen per layer by cost:
  Gram route  ||g_i||^2 = <A_i A_i^T, B_i B_i^T>          cost T^2 (d_in + d_out), wins for short T
  tiled route form tiles of g_i on chip, square, reduce     cost T d_in d_out, wins for long T
On the Triton backend the Gram route is one fused kernel over the upper triangle of token-block
pairs (half the Gram FLOPs, no T x T matrix in memory); elsewhere it is two batched matmuls (a
fused C++ version lost to torch's batched GEMMs on the CPU and was dropped).
A ``torch.library`` custom op (``torch.ops.imu_fast.outer_norms_sq``) with a fake implementation.
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import (
    CUDA_DTYPES,
    DEFAULT_PRECISION,
    NATIVE_DTYPES,
    check_outer_operands,
    check_precision,
    cuda_launch_args,
    native_dtype_name,
    result_dtype,
    sample_chunks,
    upcast_half,
)

ROUTES = ("auto", "gram", "tiled")


def outer_norms_sq_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient (N x d_out x d_in)."""
    check_outer_operands(a, b)
    g = torch.einsum("nto,nti->noi", b, a)
    return (g * g).sum((1, 2))


# Gram-route FLOP count over tiled-route FLOP count below which the Gram route is taken, per
# backend: how many times the tiled route's FLOP rate exceeds the Gram route's.
#   cpu     2.0: inside the tiny-GPT benchmark with two threads on the shared machine the tiled
#           C++ kernel (one parallel region) beat the Gram matmuls at T = 128 and 512, the Gram
#           route won at T = 8 (bench_per_sample.py, 2026-11-28 and 2026-12-01). On one thread
#           the Gram matmuls win up to T = 128 (bench_norm_routes.py: 0.8 would fit there); see
#           benchmarks/README.md, "Norm routes on the CPU"
#   torch   both routes are torch matmuls: equal rates
#   triton  the fused symmetric Gram kernel does half the Gram FLOPs counted here on the same
#           tensor cores: 0.5 (not yet timed; gpu_check times both routes at the benchmark shapes)
#   cuda    tiled = the CUDA-core kernels, Gram = cuBLAS matmuls: an estimate (0.25) until timed
GRAM_ADVANTAGE = {"cpu": 2.0, "torch": 1.0, "triton": 0.5, "cuda": 0.25}


def pick_route(t: int, d_in: int, d_out: int, backend: str = "cpu") -> str:
    return "gram" if GRAM_ADVANTAGE[backend] * t * (d_in + d_out) < d_in * d_out else "tiled"


def _gram_norms_sq(a, b):
    a, b = upcast_half(a, b)
    n, t, _ = a.shape
    out = a.new_empty(n)
    for chunk in sample_chunks(n, 2 * t * t * a.element_size()):
        out[chunk] = (torch.bmm(a[chunk], a[chunk].mT) * torch.bmm(b[chunk], b[chunk].mT)).sum((1, 2))
    return out


def _tiled_norms_sq_torch(a, b):
    a, b = upcast_half(a, b)
    n, _, d_in = a.shape
    out = a.new_empty(n)
    for chunk in sample_chunks(n, b.shape[2] * d_in * a.element_size()):
        g = torch.bmm(b[chunk].mT, a[chunk])
        out[chunk] = (g * g).sum((1, 2))
    return out


def _tiled_norms_native(a, b, on_cuda):
    if not on_cuda:
        a, b = upcast_half(a, b)
    dtype = native_dtype_name(a, b, table=CUDA_DTYPES if on_cuda else NATIVE_DTYPES)
    a, b = a.contiguous(), b.contiguous()
    n, t, d_in = a.shape
    d_out = b.shape[2]
    out = a.new_zeros(n, dtype=result_dtype(a.dtype))
    if n == 0 or t == 0:
        return out
    args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), n, t, d_in, d_out, dtype)
    if on_cuda:
        # One block per (sample, tile) writes a partial; a second kernel adds them per sample.
        parts = out.new_empty(n * native.outer_norms_cuda_tiles(d_in, d_out))
        native.outer_norms_cuda(*args, parts.data_ptr(), *cuda_launch_args(a.device))
    else:
        native.outer_norms_cpu(*args)
    return out


@torch.library.custom_op("imu_fast::outer_norms_sq", mutates_args=())
def _outer_norms_op(a: torch.Tensor, b: torch.Tensor, backend: str, route: str, precision: str) -> torch.Tensor:
    name = resolve_backend(backend, a.device)
    if route == "auto":
        route = pick_route(a.shape[1], a.shape[2], b.shape[2], name)
    if name == "triton":
        if route == "gram":
            from ..kernels.outer_gram import outer_gram_norms_triton

            return outer_gram_norms_triton(a, b, precision=precision)
        from ..kernels.outer_tiles import outer_tiles_triton

        return outer_tiles_triton(a, b, fisher=False, norms=True, precision=precision)[1]
    if route == "gram":
        return _gram_norms_sq(a, b)  # two batched matmuls: torch's GEMMs are the right tool
    if name == "torch":
        return _tiled_norms_sq_torch(a, b)
    return _tiled_norms_native(a, b, on_cuda=name == "cuda")


@_outer_norms_op.register_fake
def _(a, b, backend, route, precision):
    return a.new_empty(a.shape[0], dtype=result_dtype(a.dtype))


def outer_norms_sq(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto", route: str = "auto",
                   precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    """||B_i^T A_i||_F^2 for every sample; ``route`` is auto | gram | tiled.

    float32 result (float64 for float64 operands); ``precision`` sets the Triton dots on float32
    operands (tf32x3, tf32, bf16, ieee)."""
    check_outer_operands(a, b)
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    check_precision(precision)
    return _outer_norms_op(a, b, backend, route, precision)
