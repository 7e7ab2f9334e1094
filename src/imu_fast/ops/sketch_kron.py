"""Kronecker-factored sketch of a linear-family layer's per-sample weight gradients.

    S_i = (B_i P_out)^T (A_i P_in) = P_out^T g_i P_in      (k_out x k_in),   g_i = B_i^T A_i

A_i (T x d_in) are the layer's inputs and B_i (T x d_out) the loss gradients at its outputs for
sample i; P_in (d_in x k_in) and P_out (d_out x k_out) are the layer's projection factors. The
fused kernels form A_i P_in and B_i P_out a run of tokens at a time, on chip (registers / L1),
and contract them at once: cost T (d_in k_in + d_out k_out + k_in k_out) per sample, no
per-sample gradient and no weight gradient. The torch backend computes the same with three
matmuls (its T x k intermediates are small); ``backend="cuda"`` runs that on the GPU. On the CPU,
``backend="auto"`` takes the torch formulation: MKL's GEMMs were as fast as or faster than the fused
C++ kernel at every benchmark shape (benchmarks/README.md), which stays available as ``"cpu"``.
A ``torch.library`` custom op (``torch.ops.imu_fast.kron_sketch``).
"""

from __future__ import annotations

import torch

from .._native import native
from ..dispatch import resolve_backend
from ._launch import (
    DEFAULT_PRECISION,
    NATIVE_DTYPES,
    check_outer_operands,
    check_precision,
    check_same_device,
    native_dtype_name,
    result_dtype,
    upcast_half,
)


def _check(a, b, p_in, p_out) -> None:
    check_outer_operands(a, b)
    for name, p, d in (("P_in", p_in, a.shape[2]), ("P_out", p_out, b.shape[2])):
        if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[0] != d or p.shape[1] < 1:
            shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"kron_sketch: {name} must be a ({d} x k) matrix for a side of width {d}, got {shape}")
        if not p.is_floating_point():
            raise TypeError(f"kron_sketch: {name} must be floating point, got {p.dtype}")
    check_same_device(A=a, B=b, P_in=p_in, P_out=p_out)


def kron_sketch_ref(a: torch.Tensor, b: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """Reference: materialises every per-sample gradient g_i, then P_out^T g_i P_in (float64)."""
    _check(a, b, p_in, p_out)
    g = torch.einsum("nto,nti->noi", b.double(), a.double())
    out = torch.einsum("oq,noi,ir->nqr", p_out.double(), g, p_in.double())
    return out.to(result_dtype(a.dtype))


def _factors_like(a, p_in, p_out):
    """The factors rounded to the operands' dtype (as the Triton kernel reads them), then upcast
    with the operands for the paths that compute in float32."""
    return tuple(p.to(a.dtype).to(torch.promote_types(a.dtype, torch.float32)) for p in (p_in, p_out))


def _kron_torch(a, b, p_in, p_out):
    p_in, p_out = _factors_like(a, p_in, p_out)
    a, b = upcast_half(a, b)
    return (b @ p_out).mT @ (a @ p_in)


def _kron_native(a, b, p_in, p_out):
    p_in, p_out = _factors_like(a, p_in, p_out)
    a, b = upcast_half(a, b)
    dtype = native_dtype_name(a, b, table=NATIVE_DTYPES)
    a, b = a.contiguous(), b.contiguous()
    p_in, p_out = p_in.to(a.dtype).contiguous(), p_out.to(a.dtype).contiguous()
    n, t, d_in = a.shape
    out = a.new_empty(n, p_out.shape[1], p_in.shape[1])
    if n == 0:
        return out
    if t == 0:
        return out.zero_()
    native.kron_sketch_cpu(a.data_ptr(), b.data_ptr(), p_in.data_ptr(), p_out.data_ptr(), out.data_ptr(), n, t, d_in,
                           b.shape[2], p_in.shape[1], p_out.shape[1], dtype)
    return out


def _kron_impl(a, b, p_in, p_out, backend, precision):
    name = resolve_backend(backend, a.device)
    if name == "cpu":
        return _kron_native(a, b, p_in, p_out)
    if name == "triton":
        from ..kernels.sketch_kron import kron_sketch_triton

        return kron_sketch_triton(a, b, p_in, p_out, precision=precision)
    return _kron_torch(a, b, p_in, p_out)


@torch.library.custom_op("imu_fast::kron_sketch", mutates_args=())
def _kron_op(a: torch.Tensor, b: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor, backend: str,
             precision: str) -> torch.Tensor:
    return _kron_impl(a, b, p_in, p_out, backend, precision)


@_kron_op.register_fake
def _(a, b, p_in, p_out, backend, precision):
    return a.new_empty(a.shape[0], p_out.shape[1], p_in.shape[1], dtype=result_dtype(a.dtype))


def kron_sketch(a: torch.Tensor, b: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor, *, backend: str = "auto",
                precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    """(B_i P_out)^T (A_i P_in) for every sample (N x k_out x k_in) on the chosen backend; float32
    result (float64 for float64 operands). The factors are rounded to the operands' dtype."""
    _check(a, b, p_in, p_out)
    check_precision(precision)
    if backend == "auto" and a.device.type == "cpu":
        backend = "torch"
    if torch.compiler.is_compiling():
        return _kron_op(a, b, p_in, p_out, backend, precision)
    # Eager calls skip the custom op's dispatch (tens of microseconds, a layer's whole sketch at small T).
    return _kron_impl(a, b, p_in, p_out, backend, precision)
