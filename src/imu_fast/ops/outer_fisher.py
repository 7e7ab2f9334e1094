"""Fisher diagonal of a linear-family layer: F = sum_i (B_i^T A_i)^{.2} (d_out x d_in).

A_i (T x d_in) are the layer's inputs and B_i (T x d_out) the loss gradients w.r.t. its outputs
for sample i. The fused kernels form each tile of g_i = B_i^T A_i on chip, square it and add it
over samples: the FLOPs of one weight-gradient GEMM, and no per-sample gradient in memory.
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import check_outer_operands, cuda_stream_handle, native_dtype_name, sample_chunks, upcast_half


def outer_fisher_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient (N x d_out x d_in)."""
    check_outer_operands(a, b)
    g = torch.einsum("nto,nti->noi", b, a)
    return (g * g).sum(0)


def _outer_fisher_torch(a, b):
    # The reference, chunked over samples so the per-sample gradients of one chunk fit a budget.
    n, _, d_in = a.shape
    out = a.new_zeros(b.shape[2], d_in)
    for chunk in sample_chunks(n, b.shape[2] * d_in * a.element_size()):
        g = torch.bmm(b[chunk].mT, a[chunk])
        out += (g * g).sum(0)
    return out


def outer_fisher(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """sum_i (B_i^T A_i)^{.2} on the chosen backend (torch, cpu, triton, cuda)."""
    check_outer_operands(a, b)
    a, b = upcast_half(a, b)
    name = resolve_backend(backend, a.device)
    if name == "torch":
        return _outer_fisher_torch(a, b)
    a, b = a.contiguous(), b.contiguous()
    if name == "triton":
        from ..kernels.outer_fisher import outer_fisher_triton

        return outer_fisher_triton(a, b)
    n, t, d_in = a.shape
    out = a.new_zeros(b.shape[2], d_in)
    if n == 0 or t == 0:
        return out
    args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), n, t, d_in, b.shape[2], native_dtype_name(a, b))
    if name == "cuda":
        native.outer_fisher_cuda(*args, cuda_stream_handle(a.device))
    else:
        native.outer_fisher_cpu(*args)
    return out
