"""Shared helpers for handing torch tensors to the kernels: operand checks, dtypes, streams."""

from __future__ import annotations

import torch

NATIVE_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
# The CUDA kernels also read half operands as they are (accumulating in float32).
CUDA_DTYPES = {**NATIVE_DTYPES, torch.float16: "float16", torch.bfloat16: "bfloat16"}
HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float64, torch.float32, *HALF)
# Operand precision of the Triton dots on float32 inputs (kernels/_common.py explains each).
PRECISIONS = ("tf32x3", "tf32", "bf16", "ieee")
DEFAULT_PRECISION = "tf32x3"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are float64 for float64 operands and float32 for every other float dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def native_dtype_name(*tensors: torch.Tensor, table=NATIVE_DTYPES) -> str:
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        raise TypeError(f"all inputs must share one dtype, got {[t.dtype for t in tensors]}")
    if dtype not in table:
        names = " or ".join(str(d).replace("torch.", "") for d in table)
        raise TypeError(f"these kernels take {names}, got {dtype}")
    return table[dtype]


def cuda_launch_args(device: torch.device) -> tuple[int, int]:
    """(stream, device index) for a CUDA launch: the current stream *of the tensors' device*."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.current_stream(index).cuda_stream, index


def _check_float(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.dtype not in FLOATS:
            raise TypeError(f"{name} must be a floating-point tensor (float64, float32, float16, bfloat16), "
                            f"got {t.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"operands must be on one device, got {listed}; move them with .to(device)")


def check_head_operands(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor | None = None) -> None:
    if e.dim() != 2 or h.dim() != 2:
        raise ValueError(f"expected E (N x C) and H (N x D), got shapes {tuple(e.shape)}, {tuple(h.shape)}")
    if e.shape[0] != h.shape[0]:
        raise ValueError(f"E and H disagree on the number of samples: {e.shape[0]} vs {h.shape[0]}")
    operands = {"E": e, "H": h} if m is None else {"E": e, "H": h, "M": m}
    check_same_device(**operands)
    _check_float(**operands)
    if e.dtype != h.dtype:
        raise TypeError(f"E and H must share one dtype, got {e.dtype} and {h.dtype}")


def check_outer_operands(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"expected layer inputs A (N x T x d_in) and output gradients B (N x T x d_out), got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"A and B disagree on (samples, tokens): {tuple(a.shape[:2])} vs {tuple(b.shape[:2])}")
    check_same_device(A=a, B=b)
    _check_float(A=a, B=b)
    if a.dtype != b.dtype:
        raise TypeError(f"A and B must share one dtype, got {a.dtype} and {b.dtype}")


def upcast_half(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float16/bfloat16 operands as float32 copies, for the paths that compute in float32 (torch, CPU)."""
    return tuple(t.float() if t.dtype in HALF else t for t in tensors)


def sample_chunks(n: int, bytes_per_sample: int, budget: int = 256 << 20):
    """Slices of the sample axis whose per-chunk temporaries stay within ``budget`` bytes."""
    step = max(1, budget // max(1, bytes_per_sample))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def sm_count(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).multi_processor_count
