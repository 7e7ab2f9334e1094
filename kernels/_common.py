"""What every Triton kernel here shares: the tensor-core dot, launch sizes and the device guard.

Precision of a dot on float32 operands (``precision=`` of the public ops):
  tf32x3  three TF32 products (hi*hi + hi*lo + lo*hi): float32-level accuracy on the tensor cores
  tf32    one TF32 product (10-bit mantissa inputs): ~1e-3 relative error, about 3x faster
  bf16    operands rounded to bfloat16: ~1e-2 relative error, the fastest
  ieee    plain float32 FMAs, no tensor cores (a check on the others, slow)
float16/bfloat16 operands go to the tensor cores as they are; float64 is always exact (FMA).
Accumulation is float32 (float64 for float64 inputs) in every case.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

PRECISIONS = ("tf32x3", "tf32", "bf16", "ieee")
MAX_GRID_Y = 65535  # CUDA limit on the second grid axis


@triton.jit
def dot_acc(x, y, acc, PRECISION: tl.constexpr):
    """acc + x @ y with the operand precision chosen as the module docstring says."""
    if x.dtype == tl.float64:
        return tl.dot(x, y, acc, input_precision="ieee", out_dtype=tl.float64)
    elif x.dtype == tl.float32:
        if PRECISION == "bf16":
            return tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16), acc)
        else:
            return tl.dot(x, y, acc, input_precision=PRECISION)
    else:
        return tl.dot(x, y, acc)


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulator and result dtype: float64 stays float64, everything else sums in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """Programs that keep every SM busy with two resident programs each (1 under the interpreter,
    where each program costs milliseconds and parallelism buys nothing)."""
    if device.type != "cuda":
        return 1
    return 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def block(dim: int, gpu_block: int, lo: int = 16) -> int:
    """A block size: ``gpu_block`` on a GPU; under the interpreter the whole (padded) axis up to 64,
    since its cost is per program, not per element."""
    if not interpreted():
        return gpu_block
    return max(lo, min(64, triton.next_power_of_2(max(1, dim))))


def splits_for(tiles: int, n: int, device: torch.device) -> int:
    """How many ways to split the sample axis so that tiles x splits fills the GPU."""
    return max(1, min(n, triton.cdiv(target_programs(device), max(1, tiles))))


def on_device(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' device for the launch."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def needs_off64(*extent_stride: tuple[int, int]) -> bool:
    """Whether offsets inside one sample's slice can reach 2^31: sum of (extent - 1) * |stride|
    over its axes (pairs of extent and stride, a (rows, cols) pair for a dense output)."""
    return sum(max(0, n - 1) * abs(s) for n, s in extent_stride) + 1 >= 2**31
