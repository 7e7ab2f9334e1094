"""Shared helpers for handing torch tensors to the native kernels."""

from __future__ import annotations

import torch

NATIVE_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def native_dtype_name(*tensors: torch.Tensor) -> str:
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        raise TypeError(f"all inputs must share one dtype, got {[t.dtype for t in tensors]}")
    if dtype not in NATIVE_DTYPES:
        raise TypeError(f"native kernels take float32 or float64, got {dtype}")
    return NATIVE_DTYPES[dtype]


def cuda_stream_handle(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def check_head_operands(e: torch.Tensor, h: torch.Tensor) -> None:
    if e.dim() != 2 or h.dim() != 2:
        raise ValueError(f"expected E (N x C) and H (N x D), got shapes {tuple(e.shape)}, {tuple(h.shape)}")
    if e.shape[0] != h.shape[0]:
        raise ValueError(f"E and H disagree on the number of samples: {e.shape[0]} vs {h.shape[0]}")
    if e.device != h.device:
        raise ValueError(f"E and H are on different devices: {e.device} vs {h.device}")


def check_outer_operands(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"expected layer inputs A (N x T x d_in) and output gradients B (N x T x d_out), got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"A and B disagree on (samples, tokens): {tuple(a.shape[:2])} vs {tuple(b.shape[:2])}")
    if a.device != b.device:
        raise ValueError(f"A and B are on different devices: {a.device} vs {b.device}")


def upcast_half(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float16/bfloat16 operands are accumulated in float32."""
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        return tuple(t.float() for t in tensors)
    return tensors


def sample_chunks(n: int, bytes_per_sample: int, budget: int = 256 << 20):
    """Slices of the sample axis whose per-chunk temporaries stay within ``budget`` bytes."""
    step = max(1, budget // max(1, bytes_per_sample))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]
