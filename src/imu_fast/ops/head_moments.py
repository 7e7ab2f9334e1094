"""Head moments: the summed per-sample gradient and summed squared gradient of a linear head.

For a linear head with input h_i and softmax residual e_i = softmax(z_i) - onehot(y_i), the
per-sample gradient is g_i = e_i h~_i^T with h~_i = [h_i, 1] (bias) or h_i (no bias), so

    grad_sum   = sum_i e_i h~_i^T          = E^T H~
    fisher_sum = sum_i (e_i h~_i^T)^{.2}   = (E*E)^T (H~*H~)

both C x W matrices (W = D + bias). No per-sample gradient is ever formed.
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import check_head_operands, cuda_stream_handle, native_dtype_name


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
    dtype = native_dtype_name(e, h)
    e, h = e.contiguous(), h.contiguous()
    n, c = e.shape
    d = h.shape[1]
    g = e.new_zeros(c, d + int(bias))
    f = e.new_zeros(c, d + int(bias))
    if n == 0:
        return g, f
    args = (e.data_ptr(), h.data_ptr(), g.data_ptr(), f.data_ptr(), n, c, d, bias, dtype)
    if on_cuda:
        native.head_moments_cuda(*args, cuda_stream_handle(e.device))
    else:
        native.head_moments_cpu(*args)
    return g, f


def head_moments(
    e: torch.Tensor, h: torch.Tensor, bias: bool, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E^T H~, (E*E)^T (H~*H~))`` on the chosen backend; float16/bfloat16 accumulate in float32."""
    check_head_operands(e, h)
    if e.dtype in (torch.float16, torch.bfloat16):
        e, h = e.float(), h.float()
    name = resolve_backend(backend, e.device)
    if name == "torch":
        return head_moments_ref(e, h, bias)
    if name == "triton":
        from ..kernels.head_moments import head_moments_triton

        return head_moments_triton(e.contiguous(), h.contiguous(), bias)
    return _head_moments_native(e, h, bias, on_cuda=name == "cuda")
