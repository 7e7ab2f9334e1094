"""Triton kernel for the outer-product Fisher diagonal: F[o, k] = sum_i (B_i^T A_i)[o, k]^2.

One program owns a BLOCK_O x BLOCK_K tile of F. For each sample it contracts the tile of
g_i = B_i^T A_i over tokens with tl.dot (BLOCK_T tokens at a time), squares it in registers and
adds it to the running sum; g_i is never written to memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._outer_tile import sample_grad_tile


@triton.jit
def _outer_fisher_kernel(
    a_ptr, b_ptr, f_ptr, N, T, D_IN, D_OUT,
    BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    os = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc_dtype = tl.float32 if a_ptr.dtype.element_ty != tl.float64 else tl.float64
    fisher = tl.zeros((BLOCK_O, BLOCK_K), dtype=acc_dtype)
    for i in range(0, N):
        g = sample_grad_tile(a_ptr, b_ptr, i, T, D_IN, D_OUT, os, ks, acc_dtype, BLOCK_T, BLOCK_O, BLOCK_K)
        fisher += g * g
    mask = (os[:, None] < D_OUT) & (ks[None, :] < D_IN)
    tl.store(f_ptr + os[:, None] * D_IN + ks[None, :], fisher.to(f_ptr.dtype.element_ty), mask=mask)


def outer_fisher_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_i (B_i^T A_i)^2 for contiguous A (N x T x d_in), B (N x T x d_out), float32 or float64."""
    n, t, d_in = a.shape
    d_out = b.shape[2]
    f = torch.empty(d_out, d_in, device=a.device, dtype=a.dtype)
    block_t = 16 if t <= 16 else 32
    grid = (triton.cdiv(d_out, 64), triton.cdiv(d_in, 64))
    _outer_fisher_kernel[grid](a, b, f, n, t, d_in, d_out, BLOCK_T=block_t, BLOCK_O=64, BLOCK_K=64)
    return f
