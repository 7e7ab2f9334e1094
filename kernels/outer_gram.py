"""Triton kernel for per-sample gradient norms by the Gram route, fused and symmetric:

    ||B_i^T A_i||_F^2 = <A_i A_i^T, B_i B_i^T> = sum_{s,t} (A_i A_i^T)[s,t] (B_i B_i^T)[s,t]

One program owns sample i and one pair of token blocks (S, U) with S <= U. It forms the
BLOCK_S x BLOCK_S tiles A_i[S] A_i[U]^T and B_i[S] B_i[U]^T on the tensor cores, multiplies them
element-wise and reduces them to one number, counted twice when S < U (both Gram matrices are
symmetric). No T x T matrix reaches memory. Partials are added per sample in a fixed order.
Sample offsets are 64-bit; offsets inside one sample are 32-bit unless it spans 2^31 elements.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_Y, acc_dtype, block, check_precision, dot_acc, needs_off64, on_device


@triton.jit
def _gram_tile(x_i, S, U, T, D, s_t, s_d, ACC: tl.constexpr, PRECISION: tl.constexpr, OFF64: tl.constexpr,
               BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """X_i[S] X_i[U]^T, contracted over the feature axis."""
    ss = S * BLOCK_S + tl.arange(0, BLOCK_S)
    us = U * BLOCK_S + tl.arange(0, BLOCK_S)
    if OFF64:
        ss = ss.to(tl.int64)
        us = us.to(tl.int64)
    acc = tl.zeros((BLOCK_S, BLOCK_S), dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        if OFF64:
            ds = ds.to(tl.int64)
        d_ok = ds < D
        x = tl.load(x_i + ss[:, None] * s_t + ds[None, :] * s_d, mask=(ss[:, None] < T) & d_ok[None, :], other=0.0)
        y = tl.load(x_i + ds[:, None] * s_d + us[None, :] * s_t, mask=d_ok[:, None] & (us[None, :] < T), other=0.0)
        acc = dot_acc(x, y, acc, PRECISION)
    return acc


@triton.jit
def _outer_gram_kernel(
    a_ptr, b_ptr, out_ptr, pairs_ptr,
    T, D_IN, D_OUT, sa_n, sa_t, sa_d, sb_n, sb_t, sb_d,
    ACC: tl.constexpr, PRECISION: tl.constexpr, OFF64: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    p = tl.program_id(0)
    i = tl.program_id(1).to(tl.int64)
    S = tl.load(pairs_ptr + 2 * p)
    U = tl.load(pairs_ptr + 2 * p + 1)
    ga = _gram_tile(a_ptr + i * sa_n, S, U, T, D_IN, sa_t, sa_d, ACC, PRECISION, OFF64, BLOCK_S, BLOCK_D)
    gb = _gram_tile(b_ptr + i * sb_n, S, U, T, D_OUT, sb_t, sb_d, ACC, PRECISION, OFF64, BLOCK_S, BLOCK_D)
    weight = tl.where(S < U, 2.0, 1.0)
    tl.store(out_ptr + i * tl.num_programs(0) + p, weight * tl.sum(tl.sum(ga * gb, axis=1), axis=0))


@functools.cache
def _pairs(blocks: int, device: torch.device) -> torch.Tensor:
    s, u = torch.triu_indices(blocks, blocks)
    return torch.stack([s, u], 1).to(torch.int32).contiguous().to(device)


# (BLOCK_S, BLOCK_D, num_warps) on a GPU; not yet tuned there (gpu_check times alternatives).
CONFIG = {"fp32": (64, 32, 4), "half": (64, 64, 4), "fp64": (32, 16, 4)}


def outer_gram_norms_triton(a: torch.Tensor, b: torch.Tensor, *, precision: str = "tf32x3",
                            config: tuple | None = None) -> torch.Tensor:
    """||B_i^T A_i||^2 for A (N x T x d_in), B (N x T x d_out), any strides; float32 result
    (float64 for float64 inputs)."""
    check_precision(precision)
    n, t, d_in = a.shape
    if n > MAX_GRID_Y:
        return torch.cat([outer_gram_norms_triton(a[s : s + MAX_GRID_Y], b[s : s + MAX_GRID_Y], precision=precision,
                                                  config=config) for s in range(0, n, MAX_GRID_Y)])
    d_out = b.shape[2]
    acc = acc_dtype(a.dtype)
    kind = "fp64" if a.dtype == torch.float64 else "fp32" if a.dtype == torch.float32 and precision != "bf16" else "half"
    bs_gpu, bd_gpu, warps = config or CONFIG[kind]
    block_s, block_d = block(t, bs_gpu), block(max(d_in, d_out), bd_gpu)
    if n == 0 or t == 0:
        return torch.zeros(n, device=a.device, dtype=acc)
    pairs = _pairs(triton.cdiv(t, block_s), a.device)
    parts = torch.empty(n, pairs.shape[0], device=a.device, dtype=acc)
    with on_device(a.device):
        _outer_gram_kernel[(pairs.shape[0], n)](
            a, b, parts, pairs, t, d_in, d_out, *a.stride(), *b.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision,
            OFF64=needs_off64((t, a.stride(1)), (d_in, a.stride(2)), (t, b.stride(1)), (d_out, b.stride(2))),
            BLOCK_S=block_s, BLOCK_D=block_d, num_warps=warps,
        )
    return parts.sum(1)
