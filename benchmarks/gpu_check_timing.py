"""Timing cases of benchmarks/gpu_check.py: the benchmark shapes on each backend and precision,
the anchors beside them, and the machine's own ceilings measured in the same run.

Times are medians of ``triton.testing.do_bench`` (CUDA events, warm-up first) on a GPU, and of a
few ``time.perf_counter`` calls in --dry-run on a CPU. FLOP counts are nominal (2 per
multiply-add of the exact computation), whatever the precision spends to get there.
"""

from __future__ import annotations

import statistics
import time

import torch

from imu_fast.ops import head_influence, head_moments, outer_fisher, outer_fisher_and_norms_sq, outer_norms_sq

# name: (N, T, d_in, d_out)
OUTER = {"full": {"llama7b-4096x4096-T512": (8, 512, 4096, 4096), "gpt2-768x768-T1024": (8, 1024, 768, 768),
                  "gpt2-768x3072-T1024": (8, 1024, 768, 3072), "gpt2-3072x768-T1024": (8, 1024, 3072, 768)},
         "dry": {"tiny": (2, 16, 32, 24)}}
# name: (N, C, D)
HEAD = {"full": {"head-N50000-C10-D512": (50_000, 10, 512), "head-N50000-C1000-D512": (50_000, 1000, 512)},
        "dry": {"tiny": (64, 10, 33)}}


def bench(fn, device: torch.device) -> float:
    """Median seconds of fn()."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(cid, section, seconds, flops=None, moved=None, **extra):
    row = {"id": cid, "group": section, "seconds": seconds, **extra}
    if flops:
        row["TFLOP/s"] = flops / seconds / 1e12
    if moved:
        row["GB/s"] = moved / seconds / 1e9
    return row


def ceiling_cases(device: torch.device, size: str):
    """Copy bandwidth and torch GEMM rates (BF16, TF32, FP32) on this device, now."""
    big = size == "full"
    n_copy = (1 << 30) if big else (1 << 20)  # float32 elements
    g = 8192 if big else 128

    def copy():
        x = torch.randn(n_copy, device=device)
        y = torch.empty_like(x)
        return _row("ceiling copy", "ceilings", bench(lambda: y.copy_(x), device), moved=2 * 4 * n_copy)

    def gemm(label, dtype, tf32):
        def run():
            a = torch.randn(g, g, device=device).to(dtype)
            b = torch.randn(g, g, device=device).to(dtype)
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                t = bench(lambda: a @ b, device)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
            return _row(f"ceiling gemm {label}", "ceilings", t, flops=2 * g**3)

        return run

    yield "ceiling copy", copy
    yield "ceiling gemm bf16", gemm("bf16", torch.bfloat16, False)
    yield "ceiling gemm tf32", gemm("tf32", torch.float32, True)
    yield "ceiling gemm fp32", gemm("fp32", torch.float32, False)


def _variants(backend: str, device: torch.device):
    """(label, input dtype, precision) timed per backend."""
    if backend == "triton":
        out = [("fp32 tf32x3", torch.float32, "tf32x3"), ("fp32 tf32", torch.float32, "tf32"),
               ("fp32 bf16", torch.float32, "bf16"), ("bf16-in", torch.bfloat16, "tf32x3")]
        return out if device.type == "cuda" else out[:2]
    return [("fp32", torch.float32, "tf32x3"), ("bf16-in", torch.bfloat16, "tf32x3")]


def kernel_cases(backend: str, device: torch.device, size: str):
    """The benchmark shapes on one backend. For ``torch``, TF32 is allowed (the anchor a user gets
    from torch with TF32 on)."""
    for name, (n, t, d_in, d_out) in OUTER[size].items():
        for label, dtype, precision in _variants(backend, device):
            flops = 2 * n * t * d_in * d_out
            for op in ("outer_fisher", "outer_norms_tiled", "outer_norms_gram", "outer_fisher_and_norms_sq"):
                cid = f"time {op} {backend} {label} {name}"

                def run(cid=cid, op=op, n=n, t=t, d_in=d_in, d_out=d_out, dtype=dtype, precision=precision,
                        flops=flops, name=name, label=label):
                    a = torch.randn(n, t, d_in, device=device, dtype=dtype)
                    b = torch.randn(n, t, d_out, device=device, dtype=dtype)
                    fn = {"outer_fisher": lambda: outer_fisher(a, b, backend=backend, precision=precision),
                          "outer_norms_tiled": lambda: outer_norms_sq(a, b, backend=backend, route="tiled",
                                                                      precision=precision),
                          "outer_norms_gram": lambda: outer_norms_sq(a, b, backend=backend, route="gram",
                                                                     precision=precision),
                          "outer_fisher_and_norms_sq": lambda: outer_fisher_and_norms_sq(a, b, backend=backend,
                                                                                         precision=precision)}[op]
                    gram_flops = n * t * t * (d_in + d_out) * 2
                    with _tf32(backend == "torch"):
                        seconds = bench(fn, device)
                    return _row(cid, "kernels", seconds, flops=gram_flops if op == "outer_norms_gram" else flops,
                                op=op, backend=backend, variant=label, shape=name)

                yield cid, run
    for name, (n, c, d) in HEAD[size].items():
        for label, dtype, precision in _variants(backend, device):
            for op in ("head_moments", "head_influence"):
                cid = f"time {op} {backend} {label} {name}"

                def run(cid=cid, op=op, n=n, c=c, d=d, dtype=dtype, precision=precision, name=name, label=label):
                    e = torch.randn(n, c, device=device, dtype=dtype)
                    h = torch.randn(n, d, device=device, dtype=dtype)
                    m = torch.randn(c, d + 1, device=device)
                    fn = (lambda: head_moments(e, h, True, backend=backend, precision=precision)) \
                        if op == "head_moments" else \
                        (lambda: head_influence(e, h, m, True, backend=backend, precision=precision))
                    flops = (4 if op == "head_moments" else 2) * n * c * (d + 1)
                    moved = e.element_size() * n * (c + d)
                    with _tf32(backend == "torch"):
                        seconds = bench(fn, device)
                    return _row(cid, "kernels", seconds, flops=flops, moved=moved, op=op, backend=backend,
                                variant=label, shape=name)

                yield cid, run


def config_cases(device: torch.device, size: str):
    """The Triton outer kernel's alternative launch settings at the benchmark shapes (to tune)."""
    if device.type != "cuda":
        return
    from imu_fast.kernels import outer_tiles

    for name, (n, t, d_in, d_out) in OUTER[size].items():
        for kind, dtype, precision in (("fp32", torch.float32, "tf32x3"), ("half", torch.bfloat16, "tf32x3")):
            base = outer_tiles.CONFIGS[kind]
            for config in [base, *outer_tiles.ALTERNATIVES[kind]]:
                cid = f"config outer_fisher_and_norms_sq {kind} {config} {name}"

                def run(cid=cid, n=n, t=t, d_in=d_in, d_out=d_out, dtype=dtype, precision=precision, config=config,
                        name=name, kind=kind, base=base):
                    a = torch.randn(n, t, d_in, device=device, dtype=dtype)
                    b = torch.randn(n, t, d_out, device=device, dtype=dtype)
                    seconds = bench(lambda: outer_tiles.outer_tiles_triton(a, b, fisher=True, norms=True,
                                                                           precision=precision, config=config), device)
                    return _row(cid, "configs", seconds, flops=2 * n * t * d_in * d_out, shape=name, kind=kind,
                                config=list(config), default=config == base)

                yield cid, run


def anchor_cases(device: torch.device, size: str):
    """What a user would otherwise run: vmap per-sample gradients (norms and Fisher from them), and
    the one weight-gradient GEMM of the layer (B^T A over all tokens: the FLOP floor of the Fisher)."""
    from torch.func import grad, vmap

    for name, (n, t, d_in, d_out) in OUTER[size].items():
        for label, dtype in (("tf32", torch.float32), ("bf16-in", torch.bfloat16)):
            def vmap_run(cid=f"anchor vmap per-sample grads {label} {name}", n=n, t=t, d_in=d_in, d_out=d_out,
                         dtype=dtype, name=name, label=label):
                a = torch.randn(n, t, d_in, device=device, dtype=dtype)
                b = torch.randn(n, t, d_out, device=device, dtype=dtype)
                w = torch.zeros(d_out, d_in, device=device, dtype=dtype)
                per_sample = vmap(grad(lambda w, a, b: ((a @ w.T) * b).sum()), in_dims=(None, 0, 0))

                def fn():
                    g = per_sample(w, a, b).float()
                    return (g * g).sum(0), (g * g).sum((1, 2))

                with _tf32(True):
                    seconds = bench(fn, device)
                return _row(cid, "anchors", seconds, flops=2 * n * t * d_in * d_out, shape=name, variant=label)

            def gemm_run(cid=f"anchor weight-gradient GEMM {label} {name}", n=n, t=t, d_in=d_in, d_out=d_out,
                         dtype=dtype, name=name, label=label):
                a = torch.randn(n * t, d_in, device=device, dtype=dtype)
                b = torch.randn(n * t, d_out, device=device, dtype=dtype)
                with _tf32(True):
                    seconds = bench(lambda: b.T @ a, device)
                return _row(cid, "anchors", seconds, flops=2 * n * t * d_in * d_out, shape=name, variant=label)

            yield f"anchor vmap per-sample grads {label} {name}", vmap_run
            yield f"anchor weight-gradient GEMM {label} {name}", gemm_run


class _tf32:
    """Allows TF32 in torch's matmuls for the block (the anchors' setting), then restores it."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.on or self.old

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.old
