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
