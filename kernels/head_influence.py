"""Triton kernel for the head influence (formula: imu_fast/ops/head_influence.py):

    I = -rowsum((E M) * H~)

One program owns BLOCK_N samples. For each BLOCK_K column panel it forms (E M)[rows, panel] on the
tensor cores over BLOCK_C class chunks, multiplies by H~[rows, panel] and reduces over the panel,
so neither E M nor any per-sample gradient is written to memory. Row offsets are 64-bit (base
pointers per program); offsets inside its rows, and into M, are 32-bit unless M spans 2^31 elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import acc_dtype, block, check_precision, dot_acc, needs_off64, on_device


@triton.jit
def _head_influence_kernel(
    e_ptr, h_ptr, m_ptr, out_ptr,
    N, C, D, W, se_n, se_c, sh_n, sh_d, sm_c, sm_k,
    ACC: tl.constexpr, PRECISION: tl.constexpr, HAS_BIAS: tl.constexpr, M_OFF64: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    row0 = tl.program_id(0) * BLOCK_N
    r = tl.arange(0, BLOCK_N)
    row_ok = row0 + r < N
    # 64-bit base pointers of this program's rows; 32-bit offsets inside them (cheap tiles).
    e_rows = e_ptr + row0.to(tl.int64) * se_n
    h_rows = h_ptr + row0.to(tl.int64) * sh_n
    score = tl.zeros((BLOCK_N,), dtype=ACC)
    for k0 in range(0, W, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        if M_OFF64:
            ks = ks.to(tl.int64)
        em = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            if M_OFF64:
                cs = cs.to(tl.int64)
            e = tl.load(e_rows + r[:, None] * se_n + cs[None, :] * se_c,
                        mask=row_ok[:, None] & (cs[None, :] < C), other=0.0)
            m = tl.load(m_ptr + cs[:, None] * sm_c + ks[None, :] * sm_k,
                        mask=(cs[:, None] < C) & (ks[None, :] < W), other=0.0)
            if e.dtype != m.dtype:  # e.g. half residuals against a float32 M: meet in the accumulator dtype
                e = e.to(ACC)
                m = m.to(ACC)
            em = dot_acc(e, m, em, PRECISION)
        h = tl.load(h_rows + r[:, None] * sh_n + ks[None, :] * sh_d,
                    mask=row_ok[:, None] & (ks[None, :] < D), other=0.0).to(ACC)
        if HAS_BIAS:
            h = tl.where(row_ok[:, None] & (ks[None, :] == D), 1.0, h)
        score += tl.sum(em * h, axis=1)
    tl.store(out_ptr + row0.to(tl.int64) + r, -score, mask=row_ok)


def _config(c: int, dtype: torch.dtype):
    """(BLOCK_N, BLOCK_C, BLOCK_K, num_warps) on a GPU, the least-spilling of those compiled for
    sm_90 (benchmarks/triton_sm90_check.py; the TF32x3 operand splits still spill 0.2-0.7 KB per
    thread); not yet timed on a GPU."""
    if dtype == torch.float64:
        return 32, 16, 32, 4
    return (64, 16, 128, 8) if c <= 16 else (64, 32, 128, 8)


def head_influence_triton(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool, *,
                          precision: str = "tf32x3", config: tuple | None = None) -> torch.Tensor:
    """``-rowsum((E M) * H~)`` for E (N x C), H (N x D), M (C x W), any strides; float32 result
    (float64 for float64 inputs)."""
    check_precision(precision)
    n, c = e.shape
    d = h.shape[1]
    w = d + int(bias)
    acc = acc_dtype(e.dtype)
    out = torch.empty(n, device=e.device, dtype=acc)
    if n == 0:
        return out
    bn_gpu, bc_gpu, bk_gpu, warps = config or _config(c, e.dtype)
    block_n, block_c, block_k = block(n, bn_gpu), block(c, bc_gpu), block(w, bk_gpu)
    with on_device(e.device):
        _head_influence_kernel[(triton.cdiv(n, block_n),)](
            e, h, m, out, n, c, d, w, *e.stride(), *h.stride(), *m.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision, HAS_BIAS=bias,
            M_OFF64=needs_off64((c, m.stride(0)), (w, m.stride(1)), (c, e.stride(1))), BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_K=block_k, num_warps=warps,
        )
    return out
