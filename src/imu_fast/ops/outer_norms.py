"""Per-sample gradient norms of a linear-family layer: ||g_i||^2 with g_i = B_i^T A_i.

Two exact routes, chosen per layer by cost:
  Gram route  ||g_i||^2 = <A_i A_i^T, B_i B_i^T>          cost T^2 (d_in + d_out), wins for short T
  tiled route form tiles of g_i on chip, square, reduce     cost T d_in d_out, wins for long T
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import check_outer_operands, cuda_stream_handle, native_dtype_name, sample_chunks, upcast_half

ROUTES = ("auto", "gram", "tiled")


def outer_norms_sq_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient (N x d_out x d_in)."""
    check_outer_operands(a, b)
    g = torch.einsum("nto,nti->noi", b, a)
    return (g * g).sum((1, 2))


# The tiled kernels run about twice as many FLOP/s as the batched Gram matmuls (measured on CPU,
# 2026-11-28, benchmarks/README.md), so the Gram route must need under half the FLOPs to win.
GRAM_ADVANTAGE = 2.0


def pick_route(t: int, d_in: int, d_out: int) -> str:
    return "gram" if GRAM_ADVANTAGE * t * (d_in + d_out) < d_in * d_out else "tiled"


def _gram_norms_sq(a, b):
    n, t, _ = a.shape
    out = a.new_empty(n)
    for chunk in sample_chunks(n, 2 * t * t * a.element_size()):
        out[chunk] = (torch.bmm(a[chunk], a[chunk].mT) * torch.bmm(b[chunk], b[chunk].mT)).sum((1, 2))
    return out


def _tiled_norms_sq_torch(a, b):
    n, _, d_in = a.shape
    out = a.new_empty(n)
    for chunk in sample_chunks(n, b.shape[2] * d_in * a.element_size()):
        g = torch.bmm(b[chunk].mT, a[chunk])
        out[chunk] = (g * g).sum((1, 2))
    return out


def outer_norms_sq(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto", route: str = "auto") -> torch.Tensor:
    """||B_i^T A_i||_F^2 for every sample; ``route`` is auto | gram | tiled."""
    check_outer_operands(a, b)
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    a, b = upcast_half(a, b)
    n, t, d_in = a.shape
    d_out = b.shape[2]
    if route == "auto":
        route = pick_route(t, d_in, d_out)
    name = resolve_backend(backend, a.device)
    if route == "gram":
        return _gram_norms_sq(a, b)  # two batched matmuls: torch's GEMMs are the right tool
    if name == "torch":
        return _tiled_norms_sq_torch(a, b)
    a, b = a.contiguous(), b.contiguous()
    if name == "triton":
        from ..kernels.outer_norms import outer_norms_triton

        return outer_norms_triton(a, b)
    out = a.new_zeros(n)
    if n == 0 or t == 0:
        return out
    args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), n, t, d_in, d_out, native_dtype_name(a, b))
    if name == "cuda":
        native.outer_norms_cuda(*args, cuda_stream_handle(a.device))
    else:
        native.outer_norms_cpu(*args)
    return out
