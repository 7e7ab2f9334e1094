"""Correctness cases of benchmarks/gpu_check.py: every kernel op on one backend against float64
references computed on the same device, over awkward shapes, dtypes and precisions.

Each case is (id, function returning a result row); ids are stable so that a run interrupted by a
fault can resume after the case that faulted.
"""

from __future__ import annotations

import zlib

import torch

from imu_fast.ops import (
    head_influence,
    head_influence_ref,
    head_moments,
    head_moments_ref,
    outer_fisher,
    outer_fisher_and_norms_sq,
    outer_fisher_ref,
    outer_norms_sq,
    outer_norms_sq_ref,
)

# Relative error (max |got - ref| / max |ref|) allowed per operand kind. Half inputs are compared
# with the reference computed from the same rounded values, so only accumulation error remains.
TOL = {"fp64": 1e-10, "fp32": 2e-5, "tf32x3": 2e-5, "ieee": 2e-5, "tf32": 5e-3, "bf16": 3e-2, "fp16-in": 1e-4,
       "bf16-in": 1e-4}

OUTER_SHAPES = {"full": [(1, 1, 1, 1), (3, 17, 33, 65), (5, 130, 67, 129), (2, 257, 300, 70)],
                "small": [(1, 1, 1, 1), (3, 17, 33, 65), (2, 40, 20, 70)],
                "dry": [(1, 1, 1, 1), (3, 17, 33, 19)]}
HEAD_SHAPES = {"full": [(1, 1, 1), (37, 10, 513), (4099, 1000, 512), (20000, 10, 65)],
               "small": [(1, 1, 1), (37, 10, 70), (300, 33, 65)],
               "dry": [(1, 1, 1), (37, 10, 20)]}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def kinds(backend: str, device: torch.device):
    """(label, input dtype, precision) combinations worth checking on this backend."""
    out = [("fp64", torch.float64, "tf32x3"), ("fp32", torch.float32, "tf32x3")]
    # The Triton interpreter (CPU) computes bf16 dots wrongly: bf16 on Triton is checked on a GPU only.
    interpreted = backend == "triton" and device.type == "cpu"
    if backend == "triton":
        out += [("tf32", torch.float32, "tf32"), ("ieee", torch.float32, "ieee")]
        if not interpreted:
            out.append(("bf16", torch.float32, "bf16"))
    out.append(("fp16-in", torch.float16, "tf32x3"))
    if not interpreted:
        out.append(("bf16-in", torch.bfloat16, "tf32x3"))
    return out


def _rng(case_id: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(case_id.encode()))


def _randn(shape, gen, device):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device)


def _variant(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout (``strided``: sample axis outermost no longer)."""
    if layout == "contiguous":
        return x
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def _on_stream(fn, device, use_stream: bool):
    if not use_stream or device.type != "cuda":
        return fn()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        out = fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    return out


def outer_cases(backend: str, device: torch.device, size: str):
    for n, t, d_in, d_out in OUTER_SHAPES[size]:
        for label, dtype, precision in kinds(backend, device):
            for layout, stream in (("contiguous", False), ("strided", True)):
                cid = f"outer {backend} {label} {n}x{t}x{d_in}x{d_out} {layout}{' stream' if stream else ''}"

                def run(cid=cid, n=n, t=t, d_in=d_in, d_out=d_out, dtype=dtype, precision=precision, layout=layout,
                        stream=stream, label=label):
                    gen = _rng(cid)
                    a = _variant(_randn((n, t, d_in), gen, device).to(dtype), layout)
                    b = _variant(_randn((n, t, d_out), gen, device).to(dtype), layout)
                    a64, b64 = a.double(), b.double()
                    ref_f, ref_n = outer_fisher_ref(a64, b64), outer_norms_sq_ref(a64, b64)

                    def compute():
                        return (outer_fisher(a, b, backend=backend, precision=precision),
                                outer_norms_sq(a, b, backend=backend, route="gram", precision=precision),
                                outer_norms_sq(a, b, backend=backend, route="tiled", precision=precision),
                                *outer_fisher_and_norms_sq(a, b, backend=backend, precision=precision))

                    f, n_gram, n_tiled, f2, n2 = _on_stream(compute, device, stream)
                    errs = {"fisher": rel_err(f, ref_f), "norms_gram": rel_err(n_gram, ref_n),
                            "norms_tiled": rel_err(n_tiled, ref_n), "fused_fisher": rel_err(f2, ref_f),
                            "fused_norms": rel_err(n2, ref_n)}
                    return _row(cid, "outer", backend, label, errs)

                yield cid, run


def head_cases(backend: str, device: torch.device, size: str):
    for n, c, d in HEAD_SHAPES[size]:
        for label, dtype, precision in kinds(backend, device):
            for bias in (True, False):
                for layout, stream in (("contiguous", False), ("strided", True)):
                    cid = f"head {backend} {label} {n}x{c}x{d} bias={int(bias)} {layout}{' stream' if stream else ''}"

                    def run(cid=cid, n=n, c=c, d=d, dtype=dtype, precision=precision, bias=bias, layout=layout,
                            stream=stream, label=label):
                        gen = _rng(cid)
                        e = _randn((n, c), gen, device).to(dtype)
                        h = _randn((n, d), gen, device).to(dtype)
                        m = _randn((c, d + bias), gen, device).to(torch.float64 if dtype == torch.float64
                                                                    else torch.float32)
                        if layout == "strided":  # column-major E and H
                            e, h = e.T.contiguous().T, h.T.contiguous().T
                        ref_g, ref_f = head_moments_ref(e.double(), h.double(), bias)
                        ref_i = head_influence_ref(e.double(), h.double(), m.double(), bias)

                        def compute():
                            return (*head_moments(e, h, bias, backend=backend, precision=precision),
                                    head_influence(e, h, m, bias, backend=backend, precision=precision))

                        g, f, i = _on_stream(compute, device, stream)
                        errs = {"grad_sum": rel_err(g, ref_g), "fisher_sum": rel_err(f, ref_f),
                                "influence": rel_err(i, ref_i)}
                        return _row(cid, "head", backend, label, errs)

                    yield cid, run


def big_offset_cases(backend: str, device: torch.device):
    """Views into a buffer past 2^31 elements: 32-bit offsets would read the wrong samples."""
    if device.type != "cuda":
        return
    span = 2**31 + 4096

    def outer(cid="offsets outer " + backend):
        buf = torch.empty(span, dtype=torch.float16, device=device)
        gen = _rng(cid)
        n, t, d = 3, 20, 24
        stride_n = (span - t * d) // (n - 1)  # the last sample starts past 2^31
        a = buf.as_strided((n, t, d), (stride_n, d, 1))
        a.copy_(_randn((n, t, d), gen, device).half())
        b = torch.randn(n, t, 18, device=device, dtype=torch.float16)
        ref_f = outer_fisher_ref(a.double(), b.double())
        ref_n = outer_norms_sq_ref(a.double(), b.double())
        errs = {"fisher": rel_err(outer_fisher(a, b, backend=backend), ref_f),
                "norms_tiled": rel_err(outer_norms_sq(a, b, backend=backend, route="tiled"), ref_n),
                "norms_gram": rel_err(outer_norms_sq(a, b, backend=backend, route="gram"), ref_n)}
        del buf
        return _row(cid, "offsets", backend, "fp16-in", errs)

    def head(cid="offsets head " + backend):
        buf = torch.empty(span, dtype=torch.float16, device=device)
        n, c, d = 5, 16, 40
        stride_n = (span - c) // (n - 1)
        e = buf.as_strided((n, c), (stride_n, 1))
        e.copy_(torch.randn(n, c, device=device, dtype=torch.float16))
        h = torch.randn(n, d, device=device, dtype=torch.float16)
        m = torch.randn(c, d + 1, device=device)
        ref_g, ref_f = head_moments_ref(e.double(), h.double(), True)
        g, f = head_moments(e, h, True, backend=backend)
        errs = {"grad_sum": rel_err(g, ref_g), "fisher_sum": rel_err(f, ref_f),
                "influence": rel_err(head_influence(e, h, m, True, backend=backend),
                                     head_influence_ref(e.double(), h.double(), m.double(), True))}
        del buf
        return _row(cid, "offsets", backend, "fp16-in", errs)

    yield "offsets outer " + backend, outer
    yield "offsets head " + backend, head


def _row(cid, op, backend, label, errs):
    tol = TOL[label]
    worst = max(errs.values())
    return {"id": cid, "op": op, "backend": backend, "kind": label, "errors": errs, "max_rel_err": worst,
            "tol": tol, "ok": worst <= tol}


def correctness_cases(backend: str, device: torch.device, size: str):
    yield from outer_cases(backend, device, size)
    yield from head_cases(backend, device, size)
    if size == "full" and backend in ("triton", "cuda"):
        yield from big_offset_cases(backend, device)
