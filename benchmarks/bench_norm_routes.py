"""The two exact routes of per-sample gradient norms on one backend, side by side, to set that
backend's constant in ``imu_fast.ops.outer_norms.GRAM_ADVANTAGE``.

    python benchmarks/bench_norm_routes.py                      # CPU, the tiny-GPT layer shapes
    python benchmarks/bench_norm_routes.py --backend torch --repeats 15
    OMP_NUM_THREADS=1 python benchmarks/bench_norm_routes.py --threads 1   # a loaded machine: no barriers

For each (T, batch, d_in x d_out) the tiled route and the Gram route are timed round-robin
(median of --repeats after a warm-up), checked against a float64 reference, and printed with the
ratio of their FLOP rates (tiled FLOPs 2 N T d_in d_out, Gram FLOPs 2 N T^2 (d_in + d_out)): the
route rule takes the Gram route when that ratio times T (d_in + d_out) is below d_in d_out.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from imu_fast.ops import outer_norms_sq
from imu_fast.ops.outer_norms import pick_route

CASES = [(8, 256), (32, 64), (64, 32), (128, 16), (512, 4)]  # (T, batch): 2,048 tokens each
LAYERS = [(256, 256), (256, 1024), (1024, 256)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, help="torch threads (the C++ kernels follow OMP_NUM_THREADS)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {args.backend}, float32")
    print(f"{'T':>4s} {'N':>4s} {'layer':>10s} {'tiled ms':>9s} {'gram ms':>8s} {'rate tiled/gram':>16s} "
          f"{'faster':>7s} {'rule':>6s}")
    for t, n in CASES:
        for d_in, d_out in LAYERS:
            g = torch.Generator().manual_seed(t * d_in + d_out)
            a, b = torch.randn(n, t, d_in, generator=g), torch.randn(n, t, d_out, generator=g)
            ref = outer_norms_sq(a.double(), b.double(), backend="torch", route="tiled")
            fns = {r: (lambda r=r: outer_norms_sq(a, b, backend=args.backend, route=r)) for r in ("tiled", "gram")}
            for route, fn in fns.items():
                err = float((fn().double() - ref).abs().max() / ref.abs().max())
                assert err < 1e-4, f"{route} route off by {err:.2e}"
            times = {r: [] for r in fns}
            for _ in range(args.repeats):
                for route, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[route].append(time.perf_counter() - t0)
            med = {r: statistics.median(v) for r, v in times.items()}
            rate = (2 * n * t * d_in * d_out / med["tiled"]) / (2 * n * t * t * (d_in + d_out) / med["gram"])
            faster = min(med, key=med.get)
            print(f"{t:4d} {n:4d} {f'{d_in}x{d_out}':>10s} {med['tiled'] * 1e3:9.2f} {med['gram'] * 1e3:8.2f} "
                  f"{rate:16.2f} {faster:>7s} {pick_route(t, d_in, d_out, args.backend):>6s}")


if __name__ == "__main__":
    main()
