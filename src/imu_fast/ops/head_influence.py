"""Head influence: I_i = -<g_i, M> for a linear head, without forming g_i.

With g_i = e_i h~_i^T (see head_moments), <g_i, M> = e_i^T M h~_i, so

    I = -rowsum((E M) * H~)

For IMU, M = mean gradient / damped Fisher diagonal (IMU_SPEC.md section 4).
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import check_head_operands, cuda_stream_handle, native_dtype_name
from .head_moments import _with_bias_column


def _check_m(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool) -> None:
    want = (e.shape[1], h.shape[1] + int(bias))
    if tuple(m.shape) != want:
        raise ValueError(f"M must have shape {want} (classes x head columns), got {tuple(m.shape)}")


def head_influence_ref(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool) -> torch.Tensor:
    """Pure-PyTorch reference: a length-N tensor of -e_i^T M h~_i."""
    check_head_operands(e, h)
    _check_m(e, h, m, bias)
    return -((e @ m) * _with_bias_column(h, bias)).sum(dim=1)


def head_influence(
    e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool, *, backend: str = "auto"
) -> torch.Tensor:
    """-rowsum((E M) * H~) on the chosen backend; float16/bfloat16 accumulate in float32."""
    check_head_operands(e, h)
    _check_m(e, h, m, bias)
    if e.dtype in (torch.float16, torch.bfloat16):
        e, h, m = e.float(), h.float(), m.float()
    name = resolve_backend(backend, e.device)
    if name == "torch":
        return head_influence_ref(e, h, m, bias)
    if name == "triton":
        from ..kernels.head_influence import head_influence_triton

        return head_influence_triton(e.contiguous(), h.contiguous(), m.contiguous(), bias)
    dtype = native_dtype_name(e, h, m)
    e, h, m = e.contiguous(), h.contiguous(), m.contiguous()
    out = e.new_empty(e.shape[0])
    if e.shape[0] == 0:
        return out
    args = (e.data_ptr(), h.data_ptr(), m.data_ptr(), out.data_ptr(), e.shape[0], e.shape[1], h.shape[1], bias, dtype)
    if name == "cuda":
        native.head_influence_cuda(*args, cuda_stream_handle(e.device))
    else:
        native.head_influence_cpu(*args)
    return out
