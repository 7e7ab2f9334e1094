"""Head influence: I_i = -<g_i, M> for a linear head, without forming g_i.

With g_i = e_i h~_i^T (see head_moments), <g_i, M> = e_i^T M h~_i, so

    I = -rowsum((E M) * H~)

For IMU, M = mean gradient / damped Fisher diagonal (IMU_SPEC.md section 4).
A ``torch.library`` custom op (``torch.ops.imu_fast.head_influence``) with a fake implementation.
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import (
    CUDA_DTYPES,
    DEFAULT_PRECISION,
    NATIVE_DTYPES,
    check_head_operands,
    check_precision,
    cuda_launch_args,
    native_dtype_name,
    result_dtype,
    upcast_half,
)
from .head_moments import _with_bias_column


def _check_m(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool) -> None:
    want = (e.shape[1], h.shape[1] + int(bias))
    if tuple(m.shape) != want:
        raise ValueError(f"M must have shape {want} (classes x head columns), got {tuple(m.shape)}")


def head_influence_ref(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool) -> torch.Tensor:
    """Pure-PyTorch reference: a length-N tensor of -e_i^T M h~_i."""
    check_head_operands(e, h, m)
    _check_m(e, h, m, bias)
    return -((e @ m) * _with_bias_column(h, bias)).sum(dim=1)


def _head_influence_native(e, h, m, bias, on_cuda):
    out_dtype = result_dtype(e.dtype)
    if not on_cuda:
        e, h = upcast_half(e, h)
    # E and H are read in their own dtype; M (a C x W statistic) in the accumulation dtype.
    dtype = native_dtype_name(e, h, table=CUDA_DTYPES if on_cuda else NATIVE_DTYPES)
    e, h, m = e.contiguous(), h.contiguous(), m.to(out_dtype).contiguous()
    out = e.new_empty(e.shape[0], dtype=out_dtype)
    if e.shape[0] == 0:
        return out
    args = (e.data_ptr(), h.data_ptr(), m.data_ptr(), out.data_ptr(), e.shape[0], e.shape[1], h.shape[1], bias, dtype)
    if on_cuda:
        native.head_influence_cuda(*args, *cuda_launch_args(e.device))
    else:
        native.head_influence_cpu(*args)
    return out


@torch.library.custom_op("imu_fast::head_influence", mutates_args=())
def _head_influence_op(e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool, backend: str,
                       precision: str) -> torch.Tensor:
    name = resolve_backend(backend, e.device)
    if name == "torch":
        e, h, m = upcast_half(e, h, m)
        return head_influence_ref(e, h, m.to(e.dtype), bias)
    if name == "triton":
        from ..kernels.head_influence import head_influence_triton

        return head_influence_triton(e, h, m, bias, precision=precision)
    return _head_influence_native(e, h, m, bias, on_cuda=name == "cuda")


@_head_influence_op.register_fake
def _(e, h, m, bias, backend, precision):
    return e.new_empty(e.shape[0], dtype=result_dtype(e.dtype))


def head_influence(
    e: torch.Tensor, h: torch.Tensor, m: torch.Tensor, bias: bool, *, backend: str = "auto",
    precision: str = DEFAULT_PRECISION,
) -> torch.Tensor:
    """-rowsum((E M) * H~) on the chosen backend.

    float32 result (float64 for float64 operands); float16/bfloat16 E and H are read as they are
    on the Triton backend. All of E, H, M must be on one device (checked before any launch)."""
    check_head_operands(e, h, m)
    _check_m(e, h, m, bias)
    check_precision(precision)
    return _head_influence_op(e, h, m, bool(bias), backend, precision)
