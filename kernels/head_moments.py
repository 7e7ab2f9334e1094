"""Triton kernel for the head moments (see imu_fast/ops/head_moments.py for the formula).

One program owns a BLOCK_C x BLOCK_K tile of grad_sum and fisher_sum and loops over the samples
in BLOCK_N chunks: acc_g += E_chunk^T H~_chunk and acc_f += (E_chunk^2)^T (H~_chunk^2) with two
tl.dot calls. The bias column of H~ (index D) is synthesised as ones, so H is never copied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _head_moments_kernel(
    e_ptr, h_ptr, g_ptr, f_ptr,
    N, C, D, W,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_k = tl.program_id(1)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    acc_g = tl.zeros((BLOCK_C, BLOCK_K), dtype=tl.float32 if e_ptr.dtype.element_ty != tl.float64 else tl.float64)
    acc_f = tl.zeros((BLOCK_C, BLOCK_K), dtype=acc_g.dtype)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        e = tl.load(e_ptr + rows[:, None] * C + cs[None, :],
                    mask=row_ok[:, None] & (cs[None, :] < C), other=0.0).to(acc_g.dtype)
        h = tl.load(h_ptr + rows[:, None] * D + ks[None, :],
                    mask=row_ok[:, None] & (ks[None, :] < D), other=0.0).to(acc_g.dtype)
        if HAS_BIAS:
            h = tl.where(row_ok[:, None] & (ks[None, :] == D), 1.0, h)
        acc_g += tl.dot(tl.trans(e), h, input_precision="ieee")
        acc_f += tl.dot(tl.trans(e * e), h * h, input_precision="ieee")
    out = cs[:, None] * W + ks[None, :]
    mask = (cs[:, None] < C) & (ks[None, :] < W)
    tl.store(g_ptr + out, acc_g.to(g_ptr.dtype.element_ty), mask=mask)
    tl.store(f_ptr + out, acc_f.to(f_ptr.dtype.element_ty), mask=mask)


def head_moments_triton(e: torch.Tensor, h: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E^T H~, (E*E)^T (H~*H~))`` for contiguous float32/float64 E (N x C) and H (N x D)."""
    n, c = e.shape
    d = h.shape[1]
    w = d + int(bias)
    g = torch.empty(c, w, device=e.device, dtype=e.dtype)
    f = torch.empty_like(g)
    # Large blocks keep the interpreter's program count small; 64-wide tiles suit the GPU too.
    block_c = 16 if c <= 16 else 32 if c <= 32 else 64
    block_k = 64
    block_n = 32
    grid = (triton.cdiv(c, block_c), triton.cdiv(w, block_k))
    _head_moments_kernel[grid](
        e, h, g, f, n, c, d, w,
        BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_K=block_k, HAS_BIAS=bias,
    )
    return g, f
