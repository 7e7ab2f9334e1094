"""Triton kernel for the head moments (formula: imu_fast/ops/head_moments.py):

    grad_sum = E^T H~,   fisher_sum = (E*E)^T (H~*H~)     (C x W, W = D + bias)

One program owns a BLOCK_C x BLOCK_K tile of both sums and one split of the samples; it walks its
samples in BLOCK_N chunks with two tensor-core dots. The grid is tiles x splits, so a head with
few classes (C = 10: one class tile) still fills the GPU; the per-split partial sums are added in
a fixed order afterwards. The bias column (index D of H~) is synthesised, so H is never copied.
Squares are taken in float32 (float64), whatever the input dtype. Row offsets are 64-bit (base
pointers per chunk of rows); offsets inside a chunk are 32-bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import acc_dtype, block, check_precision, dot_acc, on_device, splits_for


@triton.jit
def _head_moments_kernel(
    e_ptr, h_ptr, g_ptr, f_ptr,
    N, C, D, W, PER_SPLIT, TILES_K, se_n, se_c, sh_n, sh_d,
    ACC: tl.constexpr, PRECISION: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    split = tl.program_id(1)
    cs = (tile // TILES_K) * BLOCK_C + tl.arange(0, BLOCK_C)
    ks = (tile % TILES_K) * BLOCK_K + tl.arange(0, BLOCK_K)
    r = tl.arange(0, BLOCK_N)
    first = split * PER_SPLIT
    last = tl.minimum(N, first + PER_SPLIT)
    # 64-bit base pointers of the current chunk of rows; 32-bit offsets inside it (cheap tiles).
    e_rows = e_ptr + first.to(tl.int64) * se_n
    h_rows = h_ptr + first.to(tl.int64) * sh_n
    # Accumulate the transposed tiles (H~^T E): the column axis (BLOCK_K >= 64) is the dot's M
    # axis, which Hopper's wgmma needs to be a multiple of 64, so a 10-class head still uses it.
    acc_g = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    acc_f = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    for n0 in range(first, last, BLOCK_N):
        row_ok = n0 + r < last
        e = tl.load(e_rows + r[:, None] * se_n + cs[None, :] * se_c,
                    mask=row_ok[:, None] & (cs[None, :] < C), other=0.0)
        ht = tl.load(h_rows + ks[:, None] * sh_d + r[None, :] * sh_n,
                     mask=(ks[:, None] < D) & row_ok[None, :], other=0.0)
        if HAS_BIAS:
            ht = tl.where((ks[:, None] == D) & row_ok[None, :], 1.0, ht).to(ht.dtype)
        acc_g = dot_acc(ht, e, acc_g, PRECISION)
        e2 = e.to(ACC)
        h2 = ht.to(ACC)
        acc_f = dot_acc(h2 * h2, e2 * e2, acc_f, PRECISION)
        e_rows += BLOCK_N * se_n
        h_rows += BLOCK_N * sh_n
    out = split.to(tl.int64) * C * W + cs[None, :].to(tl.int64) * W + ks[:, None]
    mask = (cs[None, :] < C) & (ks[:, None] < W)
    tl.store(g_ptr + out, acc_g, mask=mask)
    tl.store(f_ptr + out, acc_f, mask=mask)


# (BLOCK_N, BLOCK_C, BLOCK_K, num_warps) on a GPU by class count: wgmma and no spills when compiled
# for sm_90 (benchmarks/triton_sm90_check.py); not yet timed on a GPU.
def _config(c: int, dtype: torch.dtype):
    if dtype == torch.float64:
        return 16, 32, 32, 4
    return (32, 16, 128, 4) if c <= 16 else (64, 32, 128, 4) if c <= 32 else (32, 64, 128, 8)


def head_moments_triton(e: torch.Tensor, h: torch.Tensor, bias: bool, *, precision: str = "tf32x3",
                        config: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E^T H~, (E*E)^T (H~*H~))`` for E (N x C), H (N x D) of one float dtype, any strides;
    float32 results (float64 for float64 inputs)."""
    check_precision(precision)
    n, c = e.shape
    d = h.shape[1]
    w = d + int(bias)
    acc = acc_dtype(e.dtype)
    bn_gpu, bc_gpu, bk_gpu, warps = config or _config(c, e.dtype)
    block_n, block_c, block_k = block(n, bn_gpu), block(c, bc_gpu), block(w, bk_gpu)
    tiles_k = triton.cdiv(w, block_k)
    tiles = triton.cdiv(c, block_c) * tiles_k
    splits = splits_for(tiles, triton.cdiv(n, block_n), e.device)
    per_split = triton.cdiv(triton.cdiv(n, splits), block_n) * block_n if n else block_n
    splits = triton.cdiv(n, per_split) if n else 1
    g = torch.empty(splits, c, w, device=e.device, dtype=acc)
    f = torch.empty_like(g)
    with on_device(e.device):
        _head_moments_kernel[(tiles, splits)](
            e, h, g, f, n, c, d, w, per_split, tiles_k, *e.stride(), *h.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision, HAS_BIAS=bias,
            BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_K=block_k, num_warps=warps,
        )
    if splits == 1:
        return g[0], f[0]
    return g.sum(0), f.sum(0)
