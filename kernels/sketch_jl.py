"""Triton kernel for the on-the-fly JL projection (formula: imu_fast/ops/sketch_jl.py):

    Y[n, j] = scale * sum_c X[n, c] R[j, col0 + c],   R[j, p] = 1 - 2 bit(Philox(p, j >> 7, stream, role))

One program owns a BLOCK_N x BLOCK_J tile of Y (BLOCK_J <= 128 output coordinates, so the tile
lies in one Philox row group). It walks the columns in BLOCK_P steps: one ``tl.philox`` call per
column gives the 128 signs of the group, the tile's bits are picked with shifts, turned into
+-1 and fed to the tensor cores with the X tile (+-1 is exact in TF32 and BF16, so only X is
rounded by the chosen precision). R is never written to memory. Row offsets are 64-bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_Y, acc_dtype, block, check_precision, dot_acc, on_device


@triton.jit
def sign_tile(col, group, js, stream, role, seed, DTYPE: tl.constexpr):
    """+-1 entries R[js, col] as a (len(col) x len(js)) tile: col int64 columns, js rows of one group."""
    c0 = (col & 0xFFFFFFFF).to(tl.uint32)
    c3 = (role + 256 * (col >> 32)).to(tl.uint32)
    c1 = (col * 0 + group).to(tl.uint32)
    c2 = (col * 0 + stream).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3)
    q = ((js >> 5) & 3)[None, :]
    word = tl.where(q == 0, w0[:, None], tl.where(q == 1, w1[:, None], tl.where(q == 2, w2[:, None], w3[:, None])))
    bits = (word >> (js & 31).to(tl.uint32)[None, :]) & 1
    return tl.where(bits == 1, -1.0, 1.0).to(DTYPE)


@triton.jit
def _jl_kernel(
    x_ptr, out_ptr, N, W, K, col0, seed, stream, role, scale, sx_n, sx_w,
    ACC: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr,
):
    jb = tl.program_id(0)
    nb = tl.program_id(1)
    js = jb * BLOCK_J + tl.arange(0, BLOCK_J)
    group = (jb * BLOCK_J) >> 7
    rows = tl.arange(0, BLOCK_N)
    row_ok = nb * BLOCK_N + rows < N
    x_rows = x_ptr + (nb * BLOCK_N).to(tl.int64) * sx_n
    acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=ACC)
    for p0 in range(0, W, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        p_ok = ps < W
        x = tl.load(x_rows + rows[:, None] * sx_n + ps[None, :] * sx_w, mask=row_ok[:, None] & p_ok[None, :], other=0.0)
        r = sign_tile(col0 + ps.to(tl.int64), group, js, stream, role, seed, x.dtype)
        r = tl.where(p_ok[:, None], r, 0.0).to(x.dtype)
        acc = dot_acc(x, r, acc, PRECISION)
    out = out_ptr + (nb * BLOCK_N + rows[:, None]).to(tl.int64) * K + js[None, :]
    tl.store(out, acc * scale, mask=row_ok[:, None] & (js[None, :] < K))


# (BLOCK_N, BLOCK_P, BLOCK_J, num_warps) on a GPU; not yet timed on one (benchmarks/gpu_check.py).
# (the sm_90 compile: wgmma and no spills for fp32 at TF32x3 with BLOCK_P = 16)
CONFIGS = {"fp32": (64, 16, 128, 8), "half": (64, 64, 128, 8), "fp64": (32, 16, 64, 4)}


def _config(dtype: torch.dtype):
    return CONFIGS["fp64" if dtype == torch.float64 else "fp32" if dtype == torch.float32 else "half"]


def jl_project_triton(x: torch.Tensor, *, col0: int, k: int, seed: int, stream: int, role: int,
                      precision: str = "tf32x3", config: tuple | None = None) -> torch.Tensor:
    """X R[:, col0 : col0 + w]^T / sqrt(k) for X (N x w) of any float dtype and strides; float32
    result (float64 for float64 X)."""
    check_precision(precision)
    n, w = x.shape
    acc = acc_dtype(x.dtype)
    bn_gpu, bp_gpu, bj_gpu, warps = config or _config(x.dtype)
    block_n, block_p = block(n, bn_gpu), block(w, bp_gpu)
    block_j = min(128, block(k, bj_gpu))
    out = torch.empty(n, k, device=x.device, dtype=acc)
    if n == 0:
        return out
    if w == 0:
        return out.zero_()
    grid_n = triton.cdiv(n, block_n)
    if grid_n > MAX_GRID_Y:
        step = MAX_GRID_Y * block_n
        return torch.cat([jl_project_triton(x[s:s + step], col0=col0, k=k, seed=seed, stream=stream, role=role,
                                            precision=precision, config=config) for s in range(0, n, step)])
    with on_device(x.device):
        _jl_kernel[(triton.cdiv(k, block_j), grid_n)](
            x, out, n, w, k, col0, seed, stream, role, k ** -0.5, *x.stride(),
            ACC=tl.float64 if acc == torch.float64 else tl.float32, PRECISION=precision,
            BLOCK_N=block_n, BLOCK_P=block_p, BLOCK_J=block_j, num_warps=warps,
        )
    return out
