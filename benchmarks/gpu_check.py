"""The one prepared GPU call: check every kernel on every backend against float64 references, then
time the benchmark shapes beside the anchors and this machine's own ceilings.

    python benchmarks/gpu_check.py --out $OUT                 # on the GPU machine (< 5 minutes on an H200)
    python benchmarks/gpu_check.py --small --in-process       # tiny shapes, one process (compute-sanitizer)
    python benchmarks/gpu_check.py --dry-run --out /tmp/x     # the same code on CPU (torch, cpu, Triton interpreter)

Each section (one backend's correctness, one backend's timings, ceilings, anchors, launch
settings) runs in its own subprocess. Every case is written to ``gpu_check.jsonl`` as soon as it
finishes, after a "start" line: if a CUDA fault kills the process (or leaves its context unusable),
the case that was running is recorded as a fault and the section resumes after it in a fresh
process. ``gpu_check.json`` (the summary) is rewritten after every section. Exit status: 0 when the
CUDA and Triton backends were present and every correctness case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAULT_ENV = "IMU_GPU_CHECK_FAULT"  # a case id at which a worker aborts (tests the isolation)
MAX_FAULTS = 3  # per section; then the section is given up


# Seconds each section may take on the GPU, in the order they run (most telling first); a
# section past its share skips its remaining cases (recorded as skipped). Triton compiles each
# kernel specialisation once, on first use, which dominates the correctness sections.
SECTION_BUDGET = {"correct:triton": 75, "correct:cuda": 25, "correct:sketch": 30, "time:ceilings": 10, "time:triton": 50,
                  "time:cuda": 30, "time:sketch": 25, "time:torch": 20, "time:anchors": 15, "correct:torch": 15,
                  "time:configs": 20}


def sections(dry_run: bool, small: bool, backends: list[str]) -> list[str]:
    wanted = [f"correct:{b}" for b in backends] + ["correct:sketch"]
    if not small:
        wanted += ["time:ceilings", *(f"time:{b}" for b in backends), "time:sketch", "time:anchors"]
        if not dry_run:
            wanted.append("time:configs")
    order = list(SECTION_BUDGET)
    return sorted(wanted, key=lambda s: order.index(s) if s in order else len(order))


def section_cases(section: str, size: str, device):
    import gpu_check_cases as cases
    import gpu_check_sketch as sketch
    import gpu_check_timing as timing

    kind, _, arg = section.partition(":")
    if arg == "sketch":  # the sketch ops on every backend of this device
        return (sketch.correctness_cases if kind == "correct" else sketch.timing_cases)(device, size)
    if kind == "correct":
        return cases.correctness_cases(arg, device, size)
    timing_size = "dry" if size == "dry" else "full"
    return {"ceilings": lambda: timing.ceiling_cases(device, timing_size),
            "anchors": lambda: timing.anchor_cases(device, timing_size),
            "configs": lambda: timing.config_cases(device, timing_size)}.get(
        arg, lambda: timing.kernel_cases(arg, device, timing_size))()


# ------------------------------------------------------------------------------------- worker
def run_worker(section: str, size: str, log: Path, done: set[str], deadline: float) -> int:
    """Runs one section's cases not yet in ``done``, appending a line per event to ``log``."""
    import torch

    if size == "dry":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = torch.device("cuda" if torch.cuda.is_available() and size != "dry" else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # correctness references and kernels: no TF32 in torch
    fault_at = os.environ.get(FAULT_ENV)
    with log.open("a") as out:
        def emit(record):
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())

        for cid, fn in section_cases(section, size, device):
            if cid in done:
                continue
            if time.time() > deadline:
                emit({"event": "skipped", "section": section, "id": cid, "why": "time budget spent"})
                continue
            emit({"event": "start", "section": section, "id": cid})
            if cid == fault_at:
                os.abort()
            try:
                row = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            except Exception as exc:  # a Python-level failure is a result, not a crash
                row = {"id": cid, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                if device.type == "cuda" and "CUDA" in str(exc):
                    emit({**row, "event": "row", "section": section})
                    return 3  # the context may be poisoned: continue in a fresh process
            emit({**row, "event": "row", "section": section})
        emit({"event": "done", "section": section})
    return 0


# ------------------------------------------------------------------------------------- driver
def read_log(log: Path) -> list[dict]:
    if not log.exists():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            pass
    return records


def run_section(section: str, args, log: Path, deadline: float) -> None:
    """Runs a section in subprocesses until it is done, resuming after each fault."""
    for attempt in range(MAX_FAULTS + 1):
        records = [r for r in read_log(log) if r.get("section") == section]
        if any(r["event"] == "done" for r in records):
            return
        finished = {r["id"] for r in records if r["event"] in ("row", "fault", "skipped")}
        started = [r["id"] for r in records if r["event"] == "start" and r["id"] not in finished]
        with log.open("a") as out:
            for cid in started:  # the previous process died inside this case
                out.write(json.dumps({"event": "fault", "section": section, "id": cid, "ok": False,
                                      "error": "the process died in this case (see its output above)"}) + "\n")
                finished.add(cid)
        if attempt == MAX_FAULTS:
            break
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", section, "--size", args.size,
               "--log", str(log), "--deadline", str(deadline)]
        remaining = max(10.0, deadline - time.time() + 30)
        try:
            rc = subprocess.run(cmd, timeout=remaining).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc == 0:
            return
        print(f"[gpu_check] section {section}: worker ended with {rc}; resuming in a fresh process", flush=True)
    with log.open("a") as out:
        out.write(json.dumps({"event": "gave-up", "section": section, "ok": False}) + "\n")


def environment(args) -> dict:
    import torch

    import imu_fast

    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "command": " ".join(sys.argv), "size": args.size}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=list(torch.cuda.get_device_capability(0)), sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), cuda_runtime_torch=torch.version.cuda)
    info["backends"] = imu_fast.backends()
    from imu_fast._native import cuda_archs, native, native_cuda_available

    if native_cuda_available():
        info["extension_cuda"] = {"sass": list(cuda_archs()[0]), "ptx": list(cuda_archs()[1]),
                                  "runtime": int(native.cuda_runtime_version), "driver": int(native.cuda_driver_version())}
    return info


def summarize(env: dict, log: Path, problems: list[str]) -> dict:
    records = read_log(log)
    rows = [r for r in records if r["event"] in ("row", "fault")]
    failed = [r for r in rows if r.get("ok") is False]
    return {"env": env, "problems": problems, "rows": rows,
            "skipped": [r["id"] for r in records if r["event"] == "skipped"],
            "gave_up": [r["section"] for r in records if r["event"] == "gave-up"],
            "passed": sum(1 for r in rows if r.get("ok") is True), "failed": len(failed),
            "failures": [{"id": r["id"], "error": r.get("error"), "max_rel_err": r.get("max_rel_err")} for r in failed]}


def print_table(summary: dict) -> None:
    timed = [r for r in summary["rows"] if "seconds" in r]
    if timed:
        print("\n## timings (median)")
        for r in timed:
            rate = f"{r['TFLOP/s']:8.2f} TFLOP/s" if "TFLOP/s" in r else f"{r.get('GB/s', 0):8.1f} GB/s"
            print(f"  {r['id'][:78]:78s} {r['seconds'] * 1e3:10.3f} ms {rate}")
    for f in summary["failures"]:
        print(f"FAILED {f['id']}: {f['error'] or ''} (max rel err {f['max_rel_err']})")
    for p in summary["problems"]:
        print(f"PROBLEM {p}")
    print(f"\n{summary['passed']} passed, {summary['failed']} failed")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the results")
    parser.add_argument("--dry-run", action="store_true", help="CPU only: torch, cpu and Triton-interpreter backends")
    parser.add_argument("--small", action="store_true", help="tiny correctness cases only (for compute-sanitizer)")
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (compute-sanitizer, tests)")
    parser.add_argument("--budget-s", type=float, default=320.0, help="stop starting cases after this many seconds")
    parser.add_argument("--backends", nargs="+", help="backends to check (default: cuda triton torch; dry run: "
                                                      "torch cpu triton)")
    parser.add_argument("--sections", nargs="+", help="run only these sections, e.g. time:triton correct:cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        done = {r["id"] for r in read_log(args.log)
                if r.get("section") == args.worker and r["event"] in ("row", "fault", "skipped")}
        return run_worker(args.worker, args.size, args.log, done, args.deadline)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before imu_fast's kernels are first imported
    args.size = "dry" if args.dry_run else "small" if args.small else "full"
    backends = args.backends or (["torch", "cpu", "triton"] if args.dry_run else ["cuda", "triton", "torch"])
    args.out.mkdir(parents=True, exist_ok=True)
    log, summary_path = args.out / "gpu_check.jsonl", args.out / "gpu_check.json"
    log.unlink(missing_ok=True)
    started = time.time()
    deadline = started + args.budget_s

    env = environment(args)
    print(json.dumps({k: v for k, v in env.items() if k != "backends"}), flush=True)
    problems = []
    for name in backends:
        entry = env["backends"].get(name, {"available": False, "reason": "unknown backend"})
        print(f"backend {name}: {'available' if entry['available'] else 'UNAVAILABLE'} ({entry['reason']})")
        if not entry["available"]:
            problems.append(f"backend {name} unavailable: {entry['reason']}")
    backends = [b for b in backends if env["backends"].get(b, {}).get("available")]

    for section in args.sections or sections(args.dry_run, args.small, backends):
        t0 = time.time()
        until = deadline if args.dry_run else min(deadline, t0 + SECTION_BUDGET.get(section, 30))
        if args.in_process:
            run_worker(section, args.size, log, set(), until)
        else:
            run_section(section, args, log, until)
        print(f"[gpu_check] {section}: {time.time() - t0:.1f} s", flush=True)
        summary_path.write_text(json.dumps(summarize(env, log, problems), indent=1))
    summary = summarize(env, log, problems)
    summary["wall_seconds"] = time.time() - started
    summary_path.write_text(json.dumps(summary, indent=1))
    print_table(summary)
    return 0 if not problems and summary["failed"] == 0 and not summary["gave_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
