"""Triton kernel for per-sample gradient norms by tiles: out[i] = ||B_i^T A_i||_F^2.

One program owns one sample and walks over the BLOCK_O x BLOCK_K tiles of g_i = B_i^T A_i,
contracting each over tokens with tl.dot and reducing its squares; g_i never reaches memory.
This is the route for short sequences (T * (d_in + d_out) > d_in * d_out); long ones use the
Gram route, <A_i A_i^T, B_i B_i^T>, which is two batched matmuls.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._outer_tile import sample_grad_tile


@triton.jit
def _outer_norms_kernel(
    a_ptr, b_ptr, out_ptr, T, D_IN, D_OUT,
    BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i = tl.program_id(0)
    acc_dtype = tl.float32 if a_ptr.dtype.element_ty != tl.float64 else tl.float64
    total = tl.zeros((BLOCK_O, BLOCK_K), dtype=acc_dtype)
    for o0 in range(0, D_OUT, BLOCK_O):
        os = o0 + tl.arange(0, BLOCK_O)
        for k0 in range(0, D_IN, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            g = sample_grad_tile(a_ptr, b_ptr, i, T, D_IN, D_OUT, os, ks, acc_dtype, BLOCK_T, BLOCK_O, BLOCK_K)
            total += g * g
    tl.store(out_ptr + i, tl.sum(tl.sum(total, axis=1), axis=0).to(out_ptr.dtype.element_ty))


def outer_norms_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||B_i^T A_i||^2 for contiguous A (N x T x d_in), B (N x T x d_out), float32 or float64."""
    n, t, d_in = a.shape
    d_out = b.shape[2]
    out = torch.empty(n, device=a.device, dtype=a.dtype)
    if n == 0:
        return out
    block_t = 16 if t <= 16 else 32
    _outer_norms_kernel[(n,)](a, b, out, t, d_in, d_out, BLOCK_T=block_t, BLOCK_O=64, BLOCK_K=64)
    return out
