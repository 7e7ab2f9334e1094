"""Triton kernel for Kronecker sketches (formula: imu_fast/ops/sketch_kron.py):

    S_i = (B_i P_out)^T (A_i P_in)          (k_out x k_in per sample)

One program owns one sample and one run of its tokens. For each BLOCK_T tokens it forms
A P_in (BLOCK_T x KI) and B P_out (BLOCK_T x KO) on the tensor cores, keeps them in registers and
contracts them into the KO x KI accumulator with a third dot: neither product nor any per-sample
gradient reaches memory. KI and KO are k_in and k_out padded to a power of two >= 16. The grid is
samples x token splits (splits fill the GPU when there are few samples); the partial sketches of
the splits are added by torch in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_Y, acc_dtype, block, check_precision, dot_acc, on_device, splits_for


@triton.jit
def _project_rows(x_rows, ts, t_ok, p_ptr, D, K, sx_t, sx_d, sp_d, sp_k,
                  ACC: tl.constexpr, PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                  KP: tl.constexpr):
    """(BLOCK_T x KP) = X[ts, :] P for one sample's rows ``x_rows``, walking the D axis."""
    ks = tl.arange(0, KP)
    acc = tl.zeros((BLOCK_T, KP), dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        x = tl.load(x_rows + ts[:, None] * sx_t + ds[None, :] * sx_d, mask=t_ok[:, None] & d_ok[None, :], other=0.0)
        p = tl.load(p_ptr + ds[:, None] * sp_d + ks[None, :] * sp_k, mask=d_ok[:, None] & (ks[None, :] < K), other=0.0)
        acc = dot_acc(x, p.to(x.dtype), acc, PRECISION)
    return acc


@triton.jit
def _kron_kernel(
    a_ptr, b_ptr, pin_ptr, pout_ptr, out_ptr,
    N, T, D_IN, D_OUT, K_IN, K_OUT, PER_SPLIT,
    sa_n, sa_t, sa_d, sb_n, sb_t, sb_d, spi_d, spi_k, spo_d, spo_k,
    ACC: tl.constexpr, PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    KI: tl.constexpr, KO: tl.constexpr,
):
    i = tl.program_id(0)
    split = tl.program_id(1)
    a_rows = a_ptr + i.to(tl.int64) * sa_n
    b_rows = b_ptr + i.to(tl.int64) * sb_n
    first = split * PER_SPLIT
    last = tl.minimum(T, first + PER_SPLIT)
    acc = tl.zeros((KO, KI), dtype=ACC)
    for t0 in range(first, last, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        t_ok = ts < last
        ap = _project_rows(a_rows, ts, t_ok, pin_ptr, D_IN, K_IN, sa_t, sa_d, spi_d, spi_k, ACC, PRECISION, BLOCK_T,
                           BLOCK_D, KI)
        bp = _project_rows(b_rows, ts, t_ok, pout_ptr, D_OUT, K_OUT, sb_t, sb_d, spo_d, spo_k, ACC, PRECISION,
                           BLOCK_T, BLOCK_D, KO)
        acc = dot_acc(tl.trans(bp), ap, acc, PRECISION)
    ko = tl.arange(0, KO)
    ki = tl.arange(0, KI)
    out = out_ptr + (split.to(tl.int64) * N + i) * K_OUT * K_IN + ko[:, None] * K_IN + ki[None, :]
    tl.store(out, acc, mask=(ko[:, None] < K_OUT) & (ki[None, :] < K_IN))


# (BLOCK_T, BLOCK_D, num_warps) on a GPU by operand kind and padded k (<= 32 or more), chosen from
# the sm_90 compile (benchmarks/triton_sm90_check.py: wgmma, no or few spills); not yet timed on a GPU.
CONFIGS = {("fp32", "small"): (64, 32, 8), ("fp32", "large"): (32, 32, 8), ("half", "small"): (64, 64, 4),
           ("half", "large"): (64, 64, 4), ("fp64", "small"): (32, 32, 4), ("fp64", "large"): (32, 32, 4)}


def config_for(dtype: torch.dtype, k: int) -> tuple[int, int, int]:
    kind = "fp64" if dtype == torch.float64 else "fp32" if dtype == torch.float32 else "half"
    return CONFIGS[(kind, "small" if k <= 32 else "large")]


def _padded(k: int) -> int:
    return max(16, triton.next_power_of_2(k))


def kron_sketch_triton(a: torch.Tensor, b: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor, *,
                       precision: str = "tf32x3", config: tuple | None = None) -> torch.Tensor:
    """(B_i P_out)^T (A_i P_in) for A (N x T x d_in), B (N x T x d_out) of one float dtype, any
    strides; float32 result (float64 for float64 inputs). The factors are read in A's dtype."""
    check_precision(precision)
    n, t, d_in = a.shape
    d_out = b.shape[2]
    k_in, k_out = p_in.shape[1], p_out.shape[1]
    acc = acc_dtype(a.dtype)
    bt_gpu, bd_gpu, warps = config or config_for(a.dtype, max(_padded(k_in), _padded(k_out)))
    block_t, block_d = block(t, bt_gpu), block(max(d_in, d_out), bd_gpu)
    if n == 0 or t == 0:
        return torch.zeros(n, k_out, k_in, device=a.device, dtype=acc)
    p_in, p_out = p_in.to(a.dtype), p_out.to(a.dtype)
    splits = min(MAX_GRID_Y, splits_for(n, triton.cdiv(t, block_t), a.device))
    per_split = triton.cdiv(t, splits)
    splits = triton.cdiv(t, per_split)
    parts = torch.empty(splits, n, k_out, k_in, device=a.device, dtype=acc)
    with on_device(a.device):
        _kron_kernel[(n, splits)](
            a, b, p_in, p_out, parts, n, t, d_in, d_out, k_in, k_out, per_split,
            *a.stride(), *b.stride(), *p_in.stride(), *p_out.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision,
            BLOCK_T=block_t, BLOCK_D=block_d, KI=_padded(k_in), KO=_padded(k_out), num_warps=warps,
        )
    return parts[0] if splits == 1 else parts.sum(0)
