"""Triton kernel for the head influence (see imu_fast/ops/head_influence.py for the formula).

One program owns BLOCK_N samples. For each BLOCK_K column panel it forms (E M)[rows, panel] with
tl.dot over BLOCK_C class chunks, multiplies by H~[rows, panel] and reduces over the panel, so
neither E M nor any per-sample gradient is written to memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _head_influence_kernel(
    e_ptr, h_ptr, m_ptr, out_ptr,
    N, C, D, W,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    acc_dtype = tl.float32 if e_ptr.dtype.element_ty != tl.float64 else tl.float64
    score = tl.zeros((BLOCK_N,), dtype=acc_dtype)
    for k0 in range(0, W, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        em = tl.zeros((BLOCK_N, BLOCK_K), dtype=acc_dtype)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            e = tl.load(e_ptr + rows[:, None] * C + cs[None, :],
                        mask=row_ok[:, None] & (cs[None, :] < C), other=0.0).to(acc_dtype)
            m = tl.load(m_ptr + cs[:, None] * W + ks[None, :],
                        mask=(cs[:, None] < C) & (ks[None, :] < W), other=0.0).to(acc_dtype)
            em += tl.dot(e, m, input_precision="ieee")
        h = tl.load(h_ptr + rows[:, None] * D + ks[None, :],
                    mask=row_ok[:, None] & (ks[None, :] < D), other=0.0).to(acc_dtype)
        if HAS_BIAS:
            h = tl.where(row_ok[:, None] & (ks[None, :] == D), 1.0, h)
        score += tl.sum(em * h, axis=1)
    tl.store(out_ptr + rows, (-score).to(out_ptr.dtype.element_ty), mask=row_ok)


def head_influence_triton(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool) -> torch.Tensor:
    """``-rowsum((E M) * H~)`` for contiguous float32/float64 E (N x C), H (N x D), M (C x W)."""
    n, c = e.shape
    d = h.shape[1]
    w = d + int(bias)
    out = torch.empty(n, device=e.device, dtype=e.dtype)
    if n == 0:
        return out
    block_n, block_c, block_k = 32, (16 if c <= 16 else 32 if c <= 32 else 64), 64
    grid = (triton.cdiv(n, block_n),)
    _head_influence_kernel[grid](
        e, h, m, out, n, c, d, w,
        BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_K=block_k, HAS_BIAS=bias,
    )
    return out
