"""Per-sample dot product with a fixed matrix: <g_i, M> = sum_t (B_i M)[t, :] . A_i[t, :].

With g_i = B_i^T A_i and M (d_out x d_in) this is one GEMM (B M) and a row-wise product, so
torch's matmul is already at the roofline; no custom kernel is needed on any backend.
"""

from __future__ import annotations

import torch

from ._launch import check_outer_operands, check_same_device, upcast_half


def outer_dot_ref(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient (N x d_out x d_in)."""
    check_outer_operands(a, b)
    return (torch.einsum("nto,nti->noi", b, a) * m).sum((1, 2))


def outer_dot(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """<B_i^T A_i, M> for every sample i."""
    check_outer_operands(a, b)
    if tuple(m.shape) != (b.shape[2], a.shape[2]):
        raise ValueError(f"M must have shape (d_out, d_in) = {(b.shape[2], a.shape[2])}, got {tuple(m.shape)}")
    check_same_device(A=a, B=b, M=m)
    a, b, m = upcast_half(a, b, m)
    return ((b @ m.to(b.dtype)) * a).sum((1, 2))
