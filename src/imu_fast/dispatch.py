"""Which compute backends exist here, and which one a call should use.

``torch``  pure-PyTorch reference (always available, any device)
``cpu``    the C++/OpenMP kernels of ``imu_fast._C`` (CPU tensors)
``triton`` the Triton kernels in ``imu_fast.kernels`` (CUDA tensors, or CPU under TRITON_INTERPRET=1)
``cuda``   the CUDA kernels of ``imu_fast._C`` (CUDA tensors; built when nvcc was found)
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ._native import NATIVE_ERROR, native_available, native_cuda_available

BACKENDS = ("torch", "cpu", "triton", "cuda")


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_installed() -> bool:  # a file-system search: do it once
    return importlib.util.find_spec("triton") is not None


def backends() -> dict[str, dict[str, object]]:
    """Availability of every backend, with the reason when one is missing."""
    gpu = torch.cuda.is_available()
    triton_ok = _triton_installed()
    return {
        "torch": {"available": True, "reason": "pure-PyTorch reference"},
        "cpu": {
            "available": native_available(),
            "reason": "C++/OpenMP kernels" if native_available() else NATIVE_ERROR,
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
        "cuda": {
            "available": native_cuda_available() and gpu,
            "reason": (
                "CUDA kernels" if native_cuda_available() and gpu
                else "no CUDA device" if native_cuda_available()
                else "extension built without CUDA (no nvcc at build time)"
            ),
        },
    }


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``"auto"`` or an explicit name into a backend that can run on ``device``."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    table = backends()
    if backend == "auto":
        if device.type == "cuda":
            order = ("cuda", "triton", "torch")
        elif device.type == "cpu":
            order = ("cpu", "torch")
        else:
            order = ("torch",)
        return next(name for name in order if table[name]["available"])
    if not table[backend]["available"]:
        raise RuntimeError(f"backend {backend!r} is unavailable: {table[backend]['reason']}")
    needs = {"cpu": "cpu", "cuda": "cuda"}.get(backend)
    if backend == "triton":
        needs = "cpu" if triton_interpreted() and not torch.cuda.is_available() else "cuda"
    if needs is not None and device.type != needs and not (backend == "triton" and triton_interpreted()):
        raise RuntimeError(
            f"backend {backend!r} runs on {needs} tensors, but the data are on {device}; "
            f"move the model/data or pick backend='auto'"
        )
    return backend
