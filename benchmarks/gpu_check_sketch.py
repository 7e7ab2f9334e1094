"""Sketch cases of benchmarks/gpu_check.py: the JL projection and the Kronecker sketch on every
backend against float64 references computed on the same device (section ``correct:sketch``),
and their timings at benchmark shapes beside the roofline (section ``time:sketch``).

JL is compute-bound (2 N w k FLOPs, the sign tiles are generated on chip): its rate is reported in
TFLOP/s against the GEMM ceilings. A Kronecker sketch reads A and B once and does little work per
byte: its rate is reported in GB/s of A and B against the copy ceiling.
"""

from __future__ import annotations

import torch

import gpu_check_cases as cases
from gpu_check_timing import _row as timing_row
from gpu_check_timing import _tf32, bench
from imu_fast.ops import jl_project, jl_project_ref, kron_sketch, kron_sketch_ref

# (n, w, k, col0) for JL; (n, t, d_in, d_out, k_in, k_out) for Kronecker
JL_SHAPES = {"full": [(1, 1, 1, 0), (5, 1000, 130, 2**32 - 7), (64, 20000, 4096, 12345)],
             "small": [(1, 1, 1, 0), (5, 300, 130, 2**32 - 7)],
             "dry": [(1, 1, 1, 0), (5, 70, 40, 2**32 - 7)]}
KRON_SHAPES = {"full": [(1, 1, 1, 1, 1, 1), (3, 17, 33, 65, 16, 16), (8, 512, 4096, 4096, 64, 64)],
               "small": [(1, 1, 1, 1, 1, 1), (3, 17, 33, 65, 16, 16)],
               "dry": [(1, 1, 1, 1, 1, 1), (3, 9, 20, 18, 4, 16)]}
BACKENDS = {"cuda": ("triton", "torch"), "cpu": ("torch", "cpu", "triton")}
# name: (n, w, k) JL; (n, t, d_in, d_out, k_in, k_out) Kronecker
JL_TIMED = {"full": {"jl-N64-w16.8M-k4096": (64, 4096 * 4096, 4096), "jl-N8-w16.8M-k4096": (8, 4096 * 4096, 4096)},
            "dry": {"tiny": (4, 300, 64)}}
KRON_TIMED = {"full": {"kron-llama7b-T512-k64x64": (8, 512, 4096, 4096, 64, 64),
                       "kron-gpt2-T1024-k16x16": (8, 1024, 768, 3072, 16, 16)},
              "dry": {"tiny": (2, 16, 32, 24, 4, 4)}}


def _available(device):
    import imu_fast

    table = imu_fast.backends()
    return [b for b in BACKENDS[device.type] if table[b]["available"]]


def correctness_cases(device: torch.device, size: str):
    for backend in _available(device):
        for label, dtype, precision in cases.kinds(backend, device):
            for n, w, k, col0 in JL_SHAPES[size]:
                cid = f"sketch jl {backend} {label} {n}x{w}x{k}+{col0}"

                def run(cid=cid, backend=backend, label=label, dtype=dtype, precision=precision, n=n, w=w, k=k,
                        col0=col0):
                    gen = cases._rng(cid)
                    x = cases._randn((n, w), gen, device).to(dtype)
                    ref = jl_project_ref(x.double(), col0=col0, k=k, seed=2**40 + 3, stream=77)
                    got = cases._on_stream(lambda: jl_project(x, col0=col0, k=k, seed=2**40 + 3, stream=77,
                                                              backend=backend, precision=precision), device, True)
                    return cases._row(cid, "sketch", backend, label, {"jl": cases.rel_err(got, ref)})

                yield cid, run
            for n, t, d_in, d_out, k_in, k_out in KRON_SHAPES[size]:
                for layout in ("contiguous", "strided"):
                    cid = f"sketch kron {backend} {label} {n}x{t}x{d_in}x{d_out}->{k_out}x{k_in} {layout}"

                    def run(cid=cid, backend=backend, label=label, dtype=dtype, precision=precision, n=n, t=t,
                            d_in=d_in, d_out=d_out, k_in=k_in, k_out=k_out, layout=layout):
                        gen = cases._rng(cid)
                        a = cases._variant(cases._randn((n, t, d_in), gen, device).to(dtype), layout)
                        b = cases._variant(cases._randn((n, t, d_out), gen, device).to(dtype), layout)
                        p_in = cases._randn((d_in, k_in), gen, device)
                        p_out = cases._randn((d_out, k_out), gen, device)
                        ref = kron_sketch_ref(a.double(), b.double(), p_in.to(dtype).double(), p_out.to(dtype).double())
                        got = cases._on_stream(lambda: kron_sketch(a, b, p_in, p_out, backend=backend,
                                                                   precision=precision), device, layout == "strided")
                        return cases._row(cid, "sketch", backend, label, {"kron": cases.rel_err(got, ref)})

                    yield cid, run
    backends = _available(device)
    if len(backends) > 1:  # the same sketch on every backend: each against the first, same inputs
        def agree(cid=f"sketch agree {' '.join(backends)}"):
            gen = cases._rng(cid)
            x = cases._randn((9, 500), gen, device).float()
            outs = [jl_project(x, col0=3, k=200, seed=11, stream=5, backend=b) for b in backends]
            return cases._row(cid, "sketch", backends[0], "fp32", {f"jl {b}": cases.rel_err(o, outs[0])
                                                                    for b, o in zip(backends, outs)})

        yield f"sketch agree {' '.join(backends)}", agree


def timing_cases(device: torch.device, size: str):
    timed = "dry" if size == "dry" else "full"
    for backend in _available(device):
        variants = [("fp32 tf32x3", torch.float32, "tf32x3"), ("fp32 tf32", torch.float32, "tf32")]
        if device.type == "cuda":
            variants += [("fp32 bf16", torch.float32, "bf16"), ("bf16-in", torch.bfloat16, "tf32x3")]
        if backend != "triton":
            variants = variants[:1]
        for label, dtype, precision in variants:
            for name, (n, w, k) in JL_TIMED[timed].items():
                cid = f"time jl_project {backend} {label} {name}"

                def run(cid=cid, backend=backend, dtype=dtype, precision=precision, n=n, w=w, k=k, name=name,
                        label=label):
                    x = torch.randn(n, w, device=device, dtype=dtype)
                    with _tf32(backend == "torch"):
                        seconds = bench(lambda: jl_project(x, k=k, seed=1, stream=2, backend=backend,
                                                           precision=precision), device)
                    return timing_row(cid, "sketch", seconds, flops=2 * n * w * k, op="jl_project", backend=backend,
                                      variant=label, shape=name)

                yield cid, run
            for name, (n, t, d_in, d_out, k_in, k_out) in KRON_TIMED[timed].items():
                cid = f"time kron_sketch {backend} {label} {name}"

                def run(cid=cid, backend=backend, dtype=dtype, precision=precision, n=n, t=t, d_in=d_in,
                        d_out=d_out, k_in=k_in, k_out=k_out, name=name, label=label):
                    a = torch.randn(n, t, d_in, device=device, dtype=dtype)
                    b = torch.randn(n, t, d_out, device=device, dtype=dtype)
                    p_in = torch.randn(d_in, k_in, device=device)
                    p_out = torch.randn(d_out, k_out, device=device)
                    with _tf32(backend == "torch"):
                        seconds = bench(lambda: kron_sketch(a, b, p_in, p_out, backend=backend, precision=precision),
                                        device)
                    flops = 2 * n * t * (d_in * k_in + d_out * k_out + k_in * k_out)
                    return timing_row(cid, "sketch", seconds, flops=flops, moved=a.element_size() * n * t * (d_in + d_out),
                                      op="kron_sketch", backend=backend, variant=label, shape=name)

                yield cid, run
