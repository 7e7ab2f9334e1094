"""Triton kernel for per-sample outer-product gradients g_i = B_i^T A_i, by tiles of g_i.

One program owns a BLOCK_O x BLOCK_K tile of g and a run of samples. For each sample it contracts
the tile over tokens on the tensor cores, squares it in registers and

  fisher   adds it to a running sum over its samples:      F[o, k] = sum_i g_i[o, k]^2
  norms    reduces it to one partial per (sample, tile):   ||g_i||^2 = sum_tiles sum g_i^2

either or both in the same pass, so a Fisher pass yields the norms for free. No g_i reaches memory.
The grid is tiles x sample-splits; partial Fisher sums (one per split) and per-tile norms are then
added in a fixed order by torch (two-stage, deterministic: no atomics).
Sample and split offsets are 64-bit; offsets inside one sample's slice (and inside F) are 32-bit
unless that slice spans 2^31 elements (OFF64): 64-bit index tiles cost registers and spills.
A and B are read through their strides in their own dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_Y, acc_dtype, block, check_precision, dot_acc, needs_off64, on_device, splits_for


@triton.jit
def _outer_tiles_kernel(
    a_ptr, b_ptr, f_ptr, norms_ptr,
    N, T, D_IN, D_OUT, PER_SPLIT, TILES_K,
    sa_n, sa_t, sa_d, sb_n, sb_t, sb_d,
    ACC: tl.constexpr, PRECISION: tl.constexpr, FISHER: tl.constexpr, NORMS: tl.constexpr, OFF64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    split = tl.program_id(1)
    n_tiles = tl.num_programs(0)
    os = (tile // TILES_K) * BLOCK_O + tl.arange(0, BLOCK_O)
    ks = (tile % TILES_K) * BLOCK_K + tl.arange(0, BLOCK_K)
    if OFF64:
        os = os.to(tl.int64)
        ks = ks.to(tl.int64)
    o_ok = os < D_OUT
    k_ok = ks < D_IN
    first = split * PER_SPLIT
    last = tl.minimum(N, first + PER_SPLIT)
    a_i = a_ptr + first.to(tl.int64) * sa_n  # pointers advance by one sample stride per step
    b_i = b_ptr + first.to(tl.int64) * sb_n
    norm_i = norms_ptr + first.to(tl.int64) * n_tiles + tile
    fisher = tl.zeros((BLOCK_O, BLOCK_K), dtype=ACC)
    for i in range(first, last):
        g = tl.zeros((BLOCK_O, BLOCK_K), dtype=ACC)
        for t0 in range(0, T, BLOCK_T):
            ts = t0 + tl.arange(0, BLOCK_T)
            if OFF64:
                ts = ts.to(tl.int64)
            t_ok = ts < T
            bt = tl.load(b_i + os[:, None] * sb_d + ts[None, :] * sb_t, mask=o_ok[:, None] & t_ok[None, :], other=0.0)
            a = tl.load(a_i + ts[:, None] * sa_t + ks[None, :] * sa_d, mask=t_ok[:, None] & k_ok[None, :], other=0.0)
            g = dot_acc(bt, a, g, PRECISION)
        sq = g * g
        if FISHER:
            fisher += sq
        if NORMS:
            tl.store(norm_i, tl.sum(tl.sum(sq, axis=1), axis=0))
        a_i += sa_n
        b_i += sb_n
        norm_i += n_tiles
    if FISHER:
        out = f_ptr + split.to(tl.int64) * D_OUT * D_IN + os[:, None] * D_IN + ks[None, :]
        tl.store(out, fisher, mask=o_ok[:, None] & k_ok[None, :])


# GPU launch settings (BLOCK_T, BLOCK_O, BLOCK_K, num_warps) per operand kind, chosen from the sm_90
# compile (benchmarks/triton_sm90_check.py: wgmma, no spills); not yet timed on a GPU:
# benchmarks/gpu_check.py times the alternatives in ALTERNATIVES at the benchmark shapes.
CONFIGS = {
    "fp32": (16, 64, 128, 8),       # tf32x3 / tf32 / ieee on float32 operands
    "fp32-bf16": (32, 64, 128, 8),  # float32 operands rounded to bf16
    "half": (64, 64, 128, 8),       # float16 / bfloat16 operands
    "fp64": (16, 32, 64, 4),
}
ALTERNATIVES = {"fp32": [(16, 64, 64, 4), (32, 128, 64, 8)], "half": [(32, 64, 128, 8), (32, 128, 128, 8)]}


def config_kind(dtype: torch.dtype, precision: str) -> str:
    if dtype == torch.float64:
        return "fp64"
    if dtype == torch.float32:
        return "fp32-bf16" if precision == "bf16" else "fp32"
    return "half"


def _config(dtype: torch.dtype, precision: str):
    return CONFIGS[config_kind(dtype, precision)]


def outer_tiles_triton(a: torch.Tensor, b: torch.Tensor, *, fisher: bool, norms: bool,
                       precision: str = "tf32x3", config: tuple | None = None):
    """``(F or None, norms or None)`` for A (N x T x d_in), B (N x T x d_out) of one float dtype.

    F = sum_i (B_i^T A_i)^2 (d_out x d_in), norms[i] = ||B_i^T A_i||^2; float32 results (float64
    for float64 inputs). Any strides; ``config`` overrides the launch settings (benchmarks)."""
    check_precision(precision)
    n, t, d_in = a.shape
    if norms and not fisher and n > MAX_GRID_Y:
        parts = [outer_tiles_triton(a[s : s + MAX_GRID_Y], b[s : s + MAX_GRID_Y], fisher=False, norms=True,
                                    precision=precision, config=config)[1] for s in range(0, n, MAX_GRID_Y)]
        return None, torch.cat(parts)
    d_out = b.shape[2]
    acc = acc_dtype(a.dtype)
    bt_gpu, bo_gpu, bk_gpu, warps = config or _config(a.dtype, precision)
    block_t, block_o, block_k = block(t, bt_gpu), block(d_out, bo_gpu), block(d_in, bk_gpu)
    tiles_k = triton.cdiv(d_in, block_k)
    tiles = triton.cdiv(d_out, block_o) * tiles_k
    # Norms alone: one sample per program. Fisher: split samples only as far as the GPU needs.
    splits = n if not fisher else splits_for(tiles, n, a.device)
    per_split = triton.cdiv(n, splits) if n else 1
    splits = triton.cdiv(n, per_split) if n else 1
    if n == 0 or t == 0:
        return (torch.zeros(d_out, d_in, device=a.device, dtype=acc) if fisher else None,
                torch.zeros(n, device=a.device, dtype=acc) if norms else None)
    f_parts = torch.empty((splits, d_out, d_in) if fisher else (1,), device=a.device, dtype=acc)
    n_parts = torch.empty((n, tiles) if norms else (1,), device=a.device, dtype=acc)
    with on_device(a.device):
        _outer_tiles_kernel[(tiles, splits)](
            a, b, f_parts, n_parts, n, t, d_in, d_out, per_split, tiles_k,
            *a.stride(), *b.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision,
            FISHER=fisher, NORMS=norms, OFF64=needs_off64((t, a.stride(1)), (d_in, a.stride(2)), (t, b.stride(1)),
                                                          (d_out, b.stride(2)), (d_out, d_in), (d_in, 1)), BLOCK_T=block_t, BLOCK_O=block_o, BLOCK_K=block_k, num_warps=warps,
        )
    f = (f_parts[0] if splits == 1 else f_parts.sum(0)) if fisher else None
    return f, (n_parts.sum(1) if norms else None)
