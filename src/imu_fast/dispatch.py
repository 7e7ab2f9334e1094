"""Which compute backends exist here, and which one a call should use.

``torch``  pure-PyTorch reference (always available, any device)
``cpu``    the C++/OpenMP kernels of ``imu_fast._C`` (CPU tensors)
``triton`` the Triton kernels in ``imu_fast.kernels`` (CUDA tensors, or CPU under TRITON_INTERPRET=1)
``cuda``   the CUDA kernels of ``imu_fast._C`` (CUDA tensors; built when nvcc was found)

Availability of ``cuda`` is decided per device: the extension must hold code for the device's
compute capability, and the driver must be as new as the CUDA runtime linked into it.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ._native import NATIVE_ERROR, arch_problem, cuda_archs, driver_problem, native_available, native_cuda_available

BACKENDS = ("torch", "cpu", "triton", "cuda")
# On a GPU the Triton kernels (tensor cores) come first; the CUDA kernels are FP32 on CUDA cores
# and stay second until benchmarks/gpu_check.py shows them faster at the benchmark shapes.
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_installed() -> bool:  # a file-system search: do it once
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _cuda_entry(device: torch.device | None) -> dict[str, object]:
    if not native_cuda_available():
        return {"available": False, "reason": "extension built without CUDA (no nvcc at build time)"}
    sass, ptx = cuda_archs()
    built = f"sm_{', sm_'.join(sass)}" + (f" + PTX compute_{', compute_'.join(ptx)}" if ptx else "")
    if not torch.cuda.is_available():
        return {"available": False, "reason": f"no CUDA device (extension built for {built})"}
    problem = driver_problem()
    if problem is None:
        index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
        cap = _capability(index)
        problem = arch_problem(cap)
        if problem is None:
            return {"available": True, "reason": f"CUDA kernels ({built}; device cuda:{index} is sm_{cap[0]}{cap[1]})"}
    return {"available": False, "reason": problem}


def _cpu_reason() -> str:
    from ._native import native

    amx = getattr(native, "jl_amx_available", lambda: False)()  # an extension built before the AMX path has none
    return "C++/OpenMP kernels" + ("; JL projections on AMX tiles" if amx else "")


def backends(device: torch.device | str | None = None) -> dict[str, dict[str, object]]:
    """Availability of every backend, with the reason when one is missing. ``device`` (a CUDA
    device) is the GPU whose compute capability decides ``cuda``; default: the current one."""
    device = torch.device(device) if device is not None else None
    gpu = torch.cuda.is_available()
    triton_ok = _triton_installed()
    return {
        "torch": {"available": True, "reason": "pure-PyTorch reference"},
        "cpu": {
            "available": native_available(),
            "reason": _cpu_reason() if native_available() else NATIVE_ERROR,
        },
        "triton": {
            "available": triton_ok and (gpu or triton_interpreted()),
            "reason": (
                "triton not installed (pip install 'imu-fast[triton]')"
                if not triton_ok
                else "GPU kernels" if gpu
                else "interpreter (TRITON_INTERPRET=1)" if triton_interpreted()
                else "no CUDA device (set TRITON_INTERPRET=1 to run on CPU, slowly)"
            ),
        },
        "cuda": _cuda_entry(device if device is not None and device.type == "cuda" else None),
    }


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``"auto"`` or an explicit name into a backend that can run on ``device``."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    if backend == "torch":  # the reference runs everywhere: no table to build (this is called per op)
        return backend
    device = torch.device(device)
    table = backends(device)
    if backend == "auto":
        order = AUTO_ORDER.get(device.type, ("torch",))
        return next(name for name in order if table[name]["available"])
    if not table[backend]["available"]:
        raise RuntimeError(f"backend {backend!r} is unavailable: {table[backend]['reason']}")
    if backend == "cpu" and device.type != "cpu" or backend == "cuda" and device.type != "cuda":
        raise RuntimeError(
            f"backend {backend!r} runs on {backend} tensors, but the data are on {device}; "
            f"move the model/data or pick backend='auto'"
        )
    if backend == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        raise RuntimeError(f"backend 'triton' runs on CUDA tensors (or CPU ones under TRITON_INTERPRET=1), "
                           f"but the data are on {device}; pick backend='auto'")
    return backend
