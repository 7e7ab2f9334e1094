"""Fisher diagonal of a linear-family layer: F = sum_i (B_i^T A_i)^{.2} (d_out x d_in).

A_i (T x d_in) are the layer's inputs and B_i (T x d_out) the loss gradients w.r.t. its outputs
for sample i. The fused kernels form each tile of g_i = B_i^T A_i on chip, square it and add it
over samples: the FLOPs of one weight-gradient GEMM, and no per-sample gradient in memory.
``outer_fisher_and_norms_sq`` returns F and the per-sample norms ||g_i||^2 from the same pass.

Both are ``torch.library`` custom ops (``torch.ops.imu_fast.outer_fisher``,
``...outer_fisher_and_norms_sq``) with fake implementations, so ``torch.compile`` traces them.
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
from .outer_norms import outer_norms_sq


def outer_fisher_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient (N x d_out x d_in)."""
    check_outer_operands(a, b)
    g = torch.einsum("nto,nti->noi", b, a)
    return (g * g).sum(0)


def _outer_fisher_torch(a, b):
    # The reference, chunked over samples so the per-sample gradients of one chunk fit a budget.
    a, b = upcast_half(a, b)
    n, _, d_in = a.shape
    out = a.new_zeros(b.shape[2], d_in)
    for chunk in sample_chunks(n, b.shape[2] * d_in * a.element_size()):
        g = torch.bmm(b[chunk].mT, a[chunk])
        out += (g * g).sum(0)
    return out


def _outer_fisher_native(a, b, on_cuda):
    if not on_cuda:
        a, b = upcast_half(a, b)
    dtype = native_dtype_name(a, b, table=CUDA_DTYPES if on_cuda else NATIVE_DTYPES)
    a, b = a.contiguous(), b.contiguous()
    n, t, d_in = a.shape
    out = a.new_zeros(b.shape[2], d_in, dtype=result_dtype(a.dtype))
    if n == 0 or t == 0:
        return out
    args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), n, t, d_in, b.shape[2], dtype)
    if on_cuda:
        native.outer_fisher_cuda(*args, *cuda_launch_args(a.device))
    else:
        native.outer_fisher_cpu(*args)
    return out


@torch.library.custom_op("imu_fast::outer_fisher", mutates_args=())
def _outer_fisher_op(a: torch.Tensor, b: torch.Tensor, backend: str, precision: str) -> torch.Tensor:
    name = resolve_backend(backend, a.device)
    if name == "torch":
        return _outer_fisher_torch(a, b)
    if name == "triton":
        from ..kernels.outer_tiles import outer_tiles_triton

        return outer_tiles_triton(a, b, fisher=True, norms=False, precision=precision)[0]
    return _outer_fisher_native(a, b, on_cuda=name == "cuda")


@_outer_fisher_op.register_fake
def _(a, b, backend, precision):
    return a.new_empty(b.shape[2], a.shape[2], dtype=result_dtype(a.dtype))


@torch.library.custom_op("imu_fast::outer_fisher_and_norms_sq", mutates_args=())
def _fisher_and_norms_op(a: torch.Tensor, b: torch.Tensor, backend: str,
                         precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    name = resolve_backend(backend, a.device)
    if name == "triton":
        from ..kernels.outer_tiles import outer_tiles_triton

        return outer_tiles_triton(a, b, fisher=True, norms=True, precision=precision)
    # No fused kernel on the other backends: two calls.
    return (_outer_fisher_op(a, b, name, precision),
            outer_norms_sq(a, b, backend=name, precision=precision).to(result_dtype(a.dtype)))


@_fisher_and_norms_op.register_fake
def _(a, b, backend, precision):
    dtype = result_dtype(a.dtype)
    return a.new_empty(b.shape[2], a.shape[2], dtype=dtype), a.new_empty(a.shape[0], dtype=dtype)


def outer_fisher(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto",
                 precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    """sum_i (B_i^T A_i)^{.2} on the chosen backend (torch, cpu, triton, cuda).

    float32 result (float64 for float64 operands); ``precision`` sets the Triton dots on float32
    operands (tf32x3, tf32, bf16, ieee: see imu_fast.kernels._common)."""
    check_outer_operands(a, b)
    check_precision(precision)
    return _outer_fisher_op(a, b, backend, precision)


def outer_fisher_and_norms_sq(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto",
                              precision: str = DEFAULT_PRECISION) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outer_fisher(a, b), outer_norms_sq(a, b))``, in one pass on the Triton backend."""
    check_outer_operands(a, b)
    check_precision(precision)
    return _fisher_and_norms_op(a, b, backend, precision)
