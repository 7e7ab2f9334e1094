"""Head moments: the summed per-sample gradient and summed squared gradient of a linear head.

For a linear head with input h_i and softmax residual e_i = softmax(z_i) - onehot(y_i), the
per-sample gradient is g_i = e_i h~_i^T with h~_i = [h_i, 1] (bias) or h_i (no bias), so

    grad_sum   = sum_i e_i h~_i^T          = E^T H~
    fisher_sum = sum_i (e_i h~_i^T)^{.2}   = (E*E)^T (H~*H~)

both C x W matrices (W = D + bias). No per-sample gradient is ever formed.
A ``torch.library`` custom op (``torch.ops.imu_fast.head_moments``) with a fake implementation.
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
    sm_count,
    upcast_half,
)


def _with_bias_column(h: torch.Tensor, bias: bool) -> torch.Tensor:
    if not bias:
        return h
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)


def head_moments_ref(e: torch.Tensor, h: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch reference: returns ``(grad_sum, fisher_sum)``."""
    check_head_operands(e, h)
    ht = _with_bias_column(h, bias)
    return e.T @ ht, (e * e).T @ (ht * ht)


def _head_moments_native(e, h, bias, on_cuda):
    if not on_cuda:
        e, h = upcast_half(e, h)
    dtype = native_dtype_name(e, h, table=CUDA_DTYPES if on_cuda else NATIVE_DTYPES)
    e, h = e.contiguous(), h.contiguous()
    n, c = e.shape
    d = h.shape[1]
    w = d + int(bias)
    out_dtype = result_dtype(e.dtype)
    if n == 0:
        return e.new_zeros(c, w, dtype=out_dtype), e.new_zeros(c, w, dtype=out_dtype)
    if not on_cuda:
        g, f = e.new_zeros(c, w), e.new_zeros(c, w)
        native.head_moments_cpu(e.data_ptr(), h.data_ptr(), g.data_ptr(), f.data_ptr(), n, c, d, bias, dtype)
        return g, f
    # Split the samples so that tiles x splits fills the GPU; each split writes its own partial
    # sums, added here in a fixed order (deterministic).
    tiles = native.head_moments_cuda_tiles(c, d, bias)
    splits = max(1, min(_cdiv(n, 256), _cdiv(2 * sm_count(e.device), tiles)))
    g_parts = e.new_empty(splits, c, w, dtype=out_dtype)
    f_parts = torch.empty_like(g_parts)
    native.head_moments_cuda(e.data_ptr(), h.data_ptr(), g_parts.data_ptr(), f_parts.data_ptr(), n, c, d, bias,
                             dtype, splits, *cuda_launch_args(e.device))
    return (g_parts[0], f_parts[0]) if splits == 1 else (g_parts.sum(0), f_parts.sum(0))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _head_moments_torch(e, h, bias):
    e, h = upcast_half(e, h)
    return head_moments_ref(e, h, bias)


@torch.library.custom_op("imu_fast::head_moments", mutates_args=())
def _head_moments_op(e: torch.Tensor, h: torch.Tensor, bias: bool, backend: str,
                     precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    name = resolve_backend(backend, e.device)
    if name == "torch":
        return _head_moments_torch(e, h, bias)
    if name == "triton":
        from ..kernels.head_moments import head_moments_triton

        return head_moments_triton(e, h, bias, precision=precision)
    return _head_moments_native(e, h, bias, on_cuda=name == "cuda")


@_head_moments_op.register_fake
def _(e, h, bias, backend, precision):
    shape = (e.shape[1], h.shape[1] + int(bias))
    dtype = result_dtype(e.dtype)
    return e.new_empty(shape, dtype=dtype), e.new_empty(shape, dtype=dtype)


def head_moments(
    e: torch.Tensor, h: torch.Tensor, bias: bool, *, backend: str = "auto", precision: str = DEFAULT_PRECISION
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E^T H~, (E*E)^T (H~*H~))`` on the chosen backend.

    float32 results (float64 for float64 operands); float16/bfloat16 operands are read as they are
    on the Triton and CUDA backends. ``precision`` sets the Triton dots on float32 operands."""
    check_head_operands(e, h)
    check_precision(precision)
    return _head_moments_op(e, h, bool(bias), backend, precision)
