"""Timing and peak-memory helpers shared by the benchmark scripts (CPU, Linux).

Peak memory is the process's resident-set high-water mark (VmHWM) after resetting it through
/proc/self/clear_refs, minus the resident set before the call: the *extra* memory a call needs.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from pathlib import Path


def _return_freed_memory() -> None:
    """Make glibc serve large blocks by mmap and give them back on free, so that each call's peak
    is measured from a true baseline instead of being hidden by memory kept from earlier calls."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: fixed, which also stops its dynamic growth
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    except OSError:
        pass


_return_freed_memory()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def extra_peak_mib(fn) -> float:
    """Extra resident memory (MiB) at the peak of ``fn()`` over what was resident before it."""
    gc.collect()
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan")
    fn()
    return max(0, _status_kib("VmHWM") - before) / 1024


def interleaved_medians(fns: dict, repeats: int = 3, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each callable, timed round-robin so that a shared machine's
    changing load falls on every provider alike. CPU seconds count all threads of the process."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {name: {"seconds": statistics.median(wall[name]), "cpu_seconds": statistics.median(cpu[name])}
            for name in fns}


def median_seconds(fn, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
