"""Head influence on a CIFAR ResNet-18: fast path vs the authors'-style loop vs one forward pass.

Measures, side by side in one run, on a seeded, randomly initialised ResNet-18 (eval mode,
float32, 10 classes) and N random CIFAR-shaped inputs with random labels:

  fast (auto)    imu_fast.influence_scores(model, (X, Y), batch_size=256)      backend auto (C++ on CPU)
  fast (torch)   the same with backend="torch"                                   pure-PyTorch ops
  fast (head=)   the same as "fast (auto)" with head=model.linear named          diagnostic: no head search
  loop           imu_fast.influence_scores_ref(model, (X, Y), list(model.linear.parameters()))
                 two passes of batch-one autograd and a stacked N x P matrix (the authors' structure)
  forward        one plain batched eval forward pass over the same N (batch 256, no_grad): the floor

Fast paths and the forward pass are timed ``--repeats`` times, interleaved round by round so that
background load hits them alike, and summarised by the median; the loop is slow and runs
``--loop-repeats`` times (default once). Scores of the fast paths are checked against the loop's.

    python benchmarks/bench_head_influence.py                       # N=1000, 3 repeats
    python benchmarks/bench_head_influence.py --n 1000 --repeats 5 --json benchmarks/results/head_influence_cpu.json
    python benchmarks/bench_head_influence.py --n 256 --skip-loop   # quick look at fast vs forward
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

import imu_fast
from imu_fast.dispatch import resolve_backend
from imu_fast.resnet import resnet18

TARGET_FAST_OVER_FORWARD = 1.25


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """The checkout's commit, with '+dirty' when tracked package sources differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "csrc"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    return {
        "git": git_revision(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "imu_fast": imu_fast.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "backend_auto": resolve_backend("auto", torch.device("cpu")),
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (normwise relative error), in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def elementwise_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max_i |a_i - b_i| / |b_i| (sensitive to scores near zero)."""
    a, b = a.double(), b.double()
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def timed(fn, cpu: dict, key: str):
    """Wall seconds of ``fn()`` (time.perf_counter); its process CPU seconds go to ``cpu[key]``."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    t = time.perf_counter() - t0
    cpu.setdefault(key, []).append(time.process_time() - c0)
    return t, out


def forward_pass(model, x: torch.Tensor, batch_size: int) -> None:
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            model(x[i : i + batch_size])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="forget-set size N (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the fast paths and the forward pass")
    ap.add_argument("--loop-repeats", type=int, default=1, help="timed repeats of the slow per-sample loop (default 1)")
    ap.add_argument("--skip-loop", action="store_true", help="do not run the per-sample loop (no oracle check)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    env = environment()
    print("environment:")
    for k, v in env.items():
        print(f"  {k:22s} {v}")

    torch.manual_seed(args.seed)
    model = resnet18(num_classes=args.classes).float().eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.n, 3, 32, 32, generator=gen)
    y = torch.randint(0, args.classes, (args.n,), generator=gen)
    n_params = sum(p.numel() for p in model.parameters())
    head_params = list(model.linear.parameters())
    p_head = sum(p.numel() for p in head_params)
    bs = args.batch_size
    print(f"\nmodel: CIFAR ResNet-18, {n_params:,} parameters, head 'linear' with P = {p_head:,}; "
          f"N = {args.n}, batch {bs}, float32, eval mode, seed {args.seed}")

    fast_calls = {
        "fast (auto)": lambda: imu_fast.influence_scores(model, (x, y), batch_size=bs),
        "fast (torch)": lambda: imu_fast.influence_scores(model, (x, y), batch_size=bs, backend="torch"),
        "fast (head=)": lambda: imu_fast.influence_scores(model, (x, y), batch_size=bs, head=model.linear),
    }
    times: dict[str, list[float]] = {name: [] for name in ["forward", *fast_calls]}
    cpu_times: dict[str, list[float]] = {}  # process CPU seconds (all threads): less sensitive to other load
    scores: dict[str, torch.Tensor] = {}
    backend_used: dict[str, str] = {}

    # Warm-up (oneDNN primitive creation, thread pools, allocator) on one batch, untimed.
    forward_pass(model, x[:bs], bs)
    imu_fast.influence_scores(model, (x[:bs], y[:bs]), batch_size=bs)

    for r in range(args.repeats):
        t, _ = timed(lambda: forward_pass(model, x, bs), cpu_times, "forward")
        times["forward"].append(t)
        for name, call in fast_calls.items():
            t, res = timed(call, cpu_times, name)
            times[name].append(t)
            scores[name], backend_used[name] = res.scores, res.backend
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()))

    if not args.skip_loop:
        times["loop"] = []
        for r in range(args.loop_repeats):
            print(f"  loop run {r + 1}/{args.loop_repeats} (2 x {args.n} batch-one autograd calls) ...", flush=True)
            t, ref = timed(lambda: imu_fast.influence_scores_ref(model, (x, y), head_params), cpu_times, "loop")
            times["loop"].append(t)
            scores["loop"] = ref
            print(f"    {t:.2f}s")

    med = {k: statistics.median(v) for k, v in times.items()}
    fast = med["fast (auto)"]
    order = ["fast (auto)", "fast (torch)", "fast (head=)", "loop", "forward"]
    med_cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    print(f"\n{'method':14s} {'backend':8s} {'runs':>4s} {'median s':>10s} {'min s':>9s} {'max s':>9s} {'x fast':>8s}"
          f" {'median CPU s':>13s}")
    for k in order:
        if k not in med:
            continue
        v = times[k]
        print(f"{k:14s} {backend_used.get(k, '-'):8s} {len(v):4d} {med[k]:10.3f} {min(v):9.3f} {max(v):9.3f} "
              f"{med[k] / fast:8.3f} {med_cpu[k]:13.3f}")
    print("(wall seconds by time.perf_counter; 'x fast' = median / median of fast (auto); CPU s = process_time, all threads)")

    ratios = {"fast_over_forward": fast / med["forward"],
              "fast_torch_over_forward": med["fast (torch)"] / med["forward"],
              "fast_head_given_over_forward": med["fast (head=)"] / med["forward"]}
    if "loop" in med:
        ratios["loop_over_fast"] = med["loop"] / fast
    # On a shared machine the minimum is the least disturbed run, and the per-round ratio pairs
    # runs made seconds apart; both are printed next to the ratio of medians.
    mins = {k: min(v) for k, v in times.items()}
    ratios_of_min = {"fast_over_forward": mins["fast (auto)"] / mins["forward"],
                     "fast_torch_over_forward": mins["fast (torch)"] / mins["forward"],
                     "fast_head_given_over_forward": mins["fast (head=)"] / mins["forward"]}
    if "loop" in mins:
        ratios_of_min["loop_over_fast"] = mins["loop"] / mins["fast (auto)"]
    paired = {k: statistics.median(a / b for a, b in zip(times[name], times["forward"]))
              for k, name in (("fast_over_forward", "fast (auto)"), ("fast_torch_over_forward", "fast (torch)"),
                              ("fast_head_given_over_forward", "fast (head=)"))}
    names = {"fast_over_forward": ("fast (auto)", "forward"), "fast_torch_over_forward": ("fast (torch)", "forward"),
             "fast_head_given_over_forward": ("fast (head=)", "forward"), "loop_over_fast": ("loop", "fast (auto)")}
    ratios_cpu = {k: med_cpu[names[k][0]] / med_cpu[names[k][1]] for k in ratios}
    print(f"\n{'ratio':30s} {'of medians':>11s} {'of minima':>10s} {'median per round':>17s} {'of CPU medians':>15s}")
    for k in ratios:
        print(f"{k:30s} {ratios[k]:11.3f} {ratios_of_min[k]:10.3f} {paired.get(k, float('nan')):17.3f} {ratios_cpu[k]:15.3f}")
    print()
    if "loop_over_fast" in ratios:
        note = " (loop ran once)" if len(times["loop"]) == 1 else ""
        print(f"speed-up loop / fast          = {ratios['loop_over_fast']:8.1f}x{note}")
    verdict = "meets" if ratios["fast_over_forward"] <= TARGET_FAST_OVER_FORWARD else "MISSES"
    print(f"fast / forward                = {ratios['fast_over_forward']:8.4f}  ({verdict} target <= {TARGET_FAST_OVER_FORWARD}; "
          f"ratio of medians)")
    print(f"fast (torch) / forward        = {ratios['fast_torch_over_forward']:8.4f}")
    print(f"fast (head= given) / forward  = {ratios['fast_head_given_over_forward']:8.4f}")

    errors = {}
    if "loop" in scores:
        for k in fast_calls:
            errors[k] = {"rel_err_vs_loop": rel_err(scores[k], scores["loop"]),
                         "elementwise_rel_err_vs_loop": elementwise_rel_err(scores[k], scores["loop"])}
        print("\nagreement with the loop's scores (float32; max|a-b|/max|b|, and max_i |a_i-b_i|/|b_i|):")
    else:
        for k in fast_calls:
            errors[k] = {"rel_err_vs_fast_torch": rel_err(scores[k], scores["fast (torch)"])}
        print("\nloop skipped: agreement with the fast (torch) scores instead:")
    for k, e in errors.items():
        print(f"  {k:14s} " + ", ".join(f"{name} {val:.2e}" for name, val in e.items()))

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak_mib:.0f} MiB")

    result = {
        "environment": env,
        "config": {"n": args.n, "repeats": args.repeats, "loop_repeats": 0 if args.skip_loop else args.loop_repeats,
                   "batch_size": bs, "classes": args.classes, "seed": args.seed, "dtype": "float32",
                   "model": "CIFAR ResNet-18 (imu_fast.resnet)", "model_params": n_params, "head_params": p_head,
                   "command": " ".join([os.path.basename(sys.executable), *sys.argv])},
        "seconds": times,
        "median_seconds": med,
        "cpu_seconds": cpu_times,
        "median_cpu_seconds": med_cpu,
        "backend": backend_used,
        "ratios": ratios,
        "ratios_of_minima": ratios_of_min,
        "ratios_median_per_round": paired,
        "ratios_of_cpu_medians": ratios_cpu,
        "min_seconds": mins,
        "target_fast_over_forward": TARGET_FAST_OVER_FORWARD,
        "agreement": errors,
        "peak_rss_mib": round(peak_mib),
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
