"""Micro-benchmarks of the head-statistics ops across backends.

Compares ``imu_fast.ops.head_moments`` and ``imu_fast.ops.head_influence`` on the "cpu" backend
(C++/OpenMP kernels) and the "torch" backend, and the pure-PyTorch references
``head_moments_ref`` / ``head_influence_ref`` called directly, at N = 4096 samples, D = 512
features (plus a bias column) and C in {10, 100, 1000} classes, float32.

With pytest-benchmark (the project's pytest config disables benchmarks by default):

    pytest benchmarks/bench_head_kernels.py --benchmark-enable
    pytest benchmarks/bench_head_kernels.py --benchmark-enable --benchmark-group-by=param:shape --benchmark-columns=median,iqr,rounds

Without pytest-benchmark (a median-of-repeats table with ratios against the reference):

    python benchmarks/bench_head_kernels.py [--repeats 15] [--n 4096] [--d 512] [--classes 10 100 1000] [--busy 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import pytest
import torch

from imu_fast.dispatch import backends
from imu_fast.ops import head_influence, head_influence_ref, head_moments, head_moments_ref

N, D = 4096, 512
CLASSES = (10, 100, 1000)
BIAS = True
BACKENDS = ("cpu", "torch", "ref")


def make_operands(n: int, c: int, d: int, dtype=torch.float32, seed: int = 0):
    """Realistic operands: softmax residuals E (N x C), ReLU features H (N x D), and M (C x (D+1))."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    e = torch.softmax(logits, dim=1)
    e[torch.arange(n), y] -= 1
    h = torch.relu(torch.randn(n, d, generator=gen, dtype=torch.float64))
    m = torch.randn(c, d + int(BIAS), generator=gen, dtype=torch.float64)
    return e.to(dtype).contiguous(), h.to(dtype).contiguous(), m.to(dtype).contiguous()


def moments_fn(backend: str):
    if backend == "ref":
        return lambda e, h: head_moments_ref(e, h, BIAS)
    return lambda e, h: head_moments(e, h, BIAS, backend=backend)


def influence_fn(backend: str):
    if backend == "ref":
        return lambda e, h, m: head_influence_ref(e, h, m, BIAS)
    return lambda e, h, m: head_influence(e, h, m, BIAS, backend=backend)


def flops(op: str, n: int, c: int, d: int) -> float:
    """Multiply-add FLOPs (2 per MAC): two C x W x N contractions for moments, one for influence."""
    w = d + int(BIAS)
    return 4.0 * n * c * w if op == "moments" else 2.0 * n * c * w + 2.0 * n * w


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _skip_unavailable(backend: str) -> None:
    if backend != "ref" and not backends()[backend]["available"]:
        pytest.skip(f"backend {backend!r} unavailable: {backends()[backend]['reason']}")


# ------------------------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module", params=CLASSES, ids=lambda c: f"N{N}-C{c}-D{D}")
def shape(request):
    return make_operands(N, request.param, D)


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_moments(benchmark, shape, backend):
    _skip_unavailable(backend)
    e, h, _ = shape
    benchmark.group = f"head_moments N{N}-C{e.shape[1]}-D{D}"
    benchmark.extra_info["gflop"] = flops("moments", N, e.shape[1], D) / 1e9
    g, f = benchmark(moments_fn(backend), e, h)
    g_ref, f_ref = head_moments_ref(e.double(), h.double(), BIAS)
    assert rel_err(g, g_ref) < 1e-4 and rel_err(f, f_ref) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_influence(benchmark, shape, backend):
    _skip_unavailable(backend)
    e, h, m = shape
    benchmark.group = f"head_influence N{N}-C{e.shape[1]}-D{D}"
    benchmark.extra_info["gflop"] = flops("influence", N, e.shape[1], D) / 1e9
    out = benchmark(influence_fn(backend), e, h, m)
    assert rel_err(out, head_influence_ref(e.double(), h.double(), m.double(), BIAS)) < 1e-4


# ------------------------------------------------------------------------------------ plain mode
def interleaved_medians(fns: dict, args: tuple, repeats: int) -> dict:
    """Median seconds of each callable, timed round-robin (one warm-up each) so that a shared
    machine's changing load falls on every backend alike."""
    for fn in fns.values():
        fn(*args)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="head_moments / head_influence: cpu vs torch vs reference")
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--d", type=int, default=D)
    ap.add_argument("--classes", type=int, nargs="+", default=list(CLASSES))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--busy", type=int, default=0,
                    help="start this many busy-looping processes while timing (a loaded machine)")
    args = ap.parse_args(argv)
    avail = [b for b in BACKENDS if b == "ref" or backends()[b]["available"]]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.busy} busy processes; float32, "
              f"bias column; median of {args.repeats} interleaved runs after one warm-up; 'x ref' = ref time / "
              "this time (higher is faster)")
        print(f"{'op':15s} {'shape':18s} {'backend':8s} {'median ms':>10s} {'GFLOP/s':>8s} {'x ref':>7s}")
        for c in args.classes:
            e, h, m = make_operands(args.n, c, args.d)
            shape = f"N{args.n}-C{c}-D{args.d}"
            for op, make, operands in (("head_moments", moments_fn, (e, h)),
                                       ("head_influence", influence_fn, (e, h, m))):
                t = interleaved_medians({b: make(b) for b in avail}, operands, args.repeats)
                fl = flops("moments" if op == "head_moments" else "influence", args.n, c, args.d)
                for b in avail:
                    print(f"{op:15s} {shape:18s} {b:8s} {t[b] * 1e3:10.3f} {fl / t[b] / 1e9:8.1f} "
                          f"{t['ref'] / t[b]:7.2f}")
    finally:
        for p in busy:
            p.kill()


if __name__ == "__main__":
    main()
