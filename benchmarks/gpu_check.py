"""One script for a GPU session: check every GPU kernel against the float64 reference, then time
it against the memory-bandwidth and arithmetic ceilings and against the torch path.

    python benchmarks/gpu_check.py --out $OUT            # on an H200 (about 2-4 minutes)
    python benchmarks/gpu_check.py --dry-run             # on CPU: the same code on tiny shapes

Writes ``gpu_check.json`` and prints tables. Ceilings default to the H200's published numbers
(HBM3e 4.8 TB/s; FP32 67 TFLOP/s on CUDA cores, FP64 34 TFLOP/s); the kernels accumulate in
IEEE float32/float64 (no TF32), so the CUDA-core rates are the right ceilings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import imu_fast  # noqa: E402
from imu_fast.ops import (  # noqa: E402
    head_influence,
    head_influence_ref,
    head_moments,
    head_moments_ref,
    outer_fisher,
    outer_fisher_ref,
    outer_norms_sq,
    outer_norms_sq_ref,
)

PEAK = {"bandwidth": 4.8e12, torch.float32: 67e12, torch.float64: 34e12}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def timed(fn, device, repeats=10):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def gpu_backends(device):
    table = imu_fast.backends()
    names = [b for b in ("cuda", "triton", "torch") if table[b]["available"]]
    return names if device.type == "cuda" else [b for b in names if b == "torch"] + (
        ["triton"] if table["triton"]["available"] else [])


def check_correctness(device, backends, shapes):
    """Every op, backend and dtype against the float64 reference computed on the same device."""
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        tol = 1e-11 if dtype == torch.float64 else 2e-5
        for n, c, d in shapes["head"]:
            e = torch.randn(n, c, generator=g, dtype=torch.float64).to(device)
            h = torch.randn(n, d, generator=g, dtype=torch.float64).to(device)
            m = torch.randn(c, d + 1, generator=g, dtype=torch.float64).to(device)
            ref_g, ref_f = head_moments_ref(e, h, True)
            ref_i = head_influence_ref(e, h, m, True)
            for b in backends:
                got_g, got_f = head_moments(e.to(dtype), h.to(dtype), True, backend=b)
                got_i = head_influence(e.to(dtype), h.to(dtype), m.to(dtype), True, backend=b)
                err = max(rel_err(got_g, ref_g), rel_err(got_f, ref_f), rel_err(got_i, ref_i))
                rows.append({"op": "head", "backend": b, "dtype": str(dtype), "shape": [n, c, d], "rel_err": err,
                             "ok": err < tol})
        for n, t, di, do in shapes["outer"]:
            a = torch.randn(n, t, di, generator=g, dtype=torch.float64).to(device)
            b_ = torch.randn(n, t, do, generator=g, dtype=torch.float64).to(device)
            ref_f, ref_n = outer_fisher_ref(a, b_), outer_norms_sq_ref(a, b_)
            for b in backends:
                err = max(rel_err(outer_fisher(a.to(dtype), b_.to(dtype), backend=b), ref_f),
                          rel_err(outer_norms_sq(a.to(dtype), b_.to(dtype), backend=b, route="tiled"), ref_n))
                rows.append({"op": "outer", "backend": b, "dtype": str(dtype), "shape": [n, t, di, do],
                             "rel_err": err, "ok": err < tol})
    return rows


def time_kernels(device, backends, sizes, repeats):
    """Seconds, achieved FLOP/s and bandwidth, and the fraction of the binding ceiling."""
    rows = []
    dtype = torch.float32
    n, c, d = sizes["head"]
    e, h = torch.randn(n, c, device=device), torch.randn(n, d, device=device)
    m = torch.randn(c, d + 1, device=device)
    flops = {"head_moments": 4 * n * c * (d + 1), "head_influence": 2 * n * c * (d + 1)}
    moved = {"head_moments": 4 * (n * c + n * d + 2 * c * (d + 1)), "head_influence": 4 * (n * c + n * d + c * (d + 1))}
    for b in backends:
        for op, fn in (("head_moments", lambda: head_moments(e, h, True, backend=b)),
                       ("head_influence", lambda: head_influence(e, h, m, True, backend=b))):
            rows.append(_roofline_row(op, b, [n, c, d], timed(fn, device, repeats), flops[op], moved[op], dtype))
    n, t, di, do = sizes["outer"]
    a, bb = torch.randn(n, t, di, device=device), torch.randn(n, t, do, device=device)
    flops_outer = 2 * n * t * di * do
    moved_outer = 4 * (n * t * (di + do) + di * do)
    for b in backends:
        for op, fn in (("outer_fisher", lambda: outer_fisher(a, bb, backend=b)),
                       ("outer_norms_tiled", lambda: outer_norms_sq(a, bb, backend=b, route="tiled"))):
            rows.append(_roofline_row(op, b, [n, t, di, do], timed(fn, device, repeats), flops_outer, moved_outer, dtype))
    return rows


def _roofline_row(op, backend, shape, seconds, flops, moved, dtype):
    compute_bound = flops / PEAK[dtype]
    memory_bound = moved / PEAK["bandwidth"]
    floor = max(compute_bound, memory_bound)
    return {"op": op, "backend": backend, "shape": shape, "seconds": seconds, "TFLOP/s": flops / seconds / 1e12,
            "GB/s": moved / seconds / 1e9, "ceiling": "compute" if compute_bound > memory_bound else "memory",
            "fraction of ceiling": floor / seconds}


def time_end_to_end(device, n, repeats):
    """influence_scores on a CIFAR-shaped ResNet-18 against one plain eval forward pass."""
    from imu_fast.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).to(device).eval()
    x = torch.randn(n, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (n,), device=device)

    def forward():
        with torch.no_grad():
            for i in range(0, n, 256):
                model(x[i : i + 256])

    rows = []
    t_forward = timed(forward, device, repeats)
    for b in ["auto", "torch"]:
        t = timed(lambda: imu_fast.influence_scores(model, (x, y), batch_size=256, backend=b), device, repeats)
        rows.append({"case": f"influence_scores backend={b}", "N": n, "seconds": t, "over forward": t / t_forward})
    rows.append({"case": "eval forward", "N": n, "seconds": t_forward, "over forward": 1.0})
    return rows


def print_rows(title, rows):
    print(f"\n## {title}")
    for row in rows:
        print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on whatever device is present")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    backends = gpu_backends(device)
    if args.dry_run:
        shapes = {"head": [(5, 3, 7)], "outer": [(2, 5, 7, 3)]}
        sizes = {"head": (64, 10, 33), "outer": (2, 16, 32, 32)}
        n_end, repeats = 4, 1
    else:
        shapes = {"head": [(1, 1, 1), (37, 10, 513), (1000, 100, 257), (4099, 1000, 512)],
                  "outer": [(1, 1, 1, 1), (3, 17, 33, 65), (16, 128, 256, 1024), (4, 512, 1024, 256)]}
        sizes = {"head": (50_000, 1000, 512), "outer": (64, 512, 1024, 1024)}
        n_end, repeats = 10_000, 10
    env = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
           "backends": backends, "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps(env))
    results = {"env": env}
    started = time.perf_counter()
    results["correctness"] = check_correctness(device, backends, shapes)
    print_rows("correctness (float64 reference on the same device)", results["correctness"])
    results["kernels"] = time_kernels(device, backends, sizes, repeats)
    print_rows("kernel timings against the roofline", results["kernels"])
    results["end_to_end"] = time_end_to_end(device, n_end, max(1, repeats // 3))
    print_rows("ResNet-18 head influence against one eval forward pass", results["end_to_end"])
    results["wall_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    failed = [r for r in results["correctness"] if not r["ok"]]
    print(f"\n{len(results['correctness']) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
