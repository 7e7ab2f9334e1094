"""The tile both outer-product kernels share: one BLOCK_O x BLOCK_K block of g_i = B_i^T A_i."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sample_grad_tile(a_ptr, b_ptr, i, T, D_IN, D_OUT, os, ks, ACC_DTYPE: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows ``os`` and columns ``ks`` of sample i's gradient, contracted over tokens in registers."""
    g = tl.zeros((BLOCK_O, BLOCK_K), dtype=ACC_DTYPE)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        a = tl.load(a_ptr + i * T * D_IN + ts[:, None] * D_IN + ks[None, :],
                    mask=(ts[:, None] < T) & (ks[None, :] < D_IN), other=0.0).to(ACC_DTYPE)
        b = tl.load(b_ptr + i * T * D_OUT + ts[:, None] * D_OUT + os[None, :],
                    mask=(ts[:, None] < T) & (os[None, :] < D_OUT), other=0.0).to(ACC_DTYPE)
        g += tl.dot(tl.trans(b), a, input_precision="ieee")
    return g
