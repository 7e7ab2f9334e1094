"""Loads the compiled extension ``imu_fast._C`` if it was built; never fails the import.

Also answers what the extension's CUDA part needs at run time: the GPU architectures it holds
code for, and a driver at least as new as the CUDA runtime linked into it (statically).
"""

from __future__ import annotations

import functools

try:
    from . import _C as native  # type: ignore[attr-defined]

    NATIVE_ERROR: str | None = None
except ImportError as exc:  # a source checkout without a build, or a broken wheel
    native = None
    NATIVE_ERROR = (
        f"imu_fast._C could not be imported ({exc}); the C++/CUDA backends are unavailable. "
        "Reinstall from the source tree: pip install --no-build-isolation . (README: Building)"
    )


def native_available() -> bool:
    return native is not None


def native_cuda_available() -> bool:
    return native is not None and bool(getattr(native, "with_cuda", False))


def cuda_archs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(architectures with machine code, architectures with PTX) in the extension, e.g.
    (("80", "86", "89", "90"), ("90",)); empty when it was built without CUDA."""
    if not native_cuda_available():
        return (), ()
    return tuple(native.cuda_sass_archs), tuple(native.cuda_ptx_archs)


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def arch_problem(capability: tuple[int, int]) -> str | None:
    """Why the extension's CUDA code cannot run on a device of this compute capability, or None.

    Machine code for sm_XY runs on devices X.Z with Z >= Y (same major); PTX for compute_XY is
    compiled by the driver for any device of capability >= X.Y. An "a" target (sm_90a) runs only
    on its own capability."""
    sass, ptx = cuda_archs()
    major, minor = capability

    def parse(arch: str) -> tuple[int, int, bool]:
        exact = arch.endswith("a") or arch.endswith("f")
        digits = arch.rstrip("af")
        return int(digits[:-1]), int(digits[-1]), exact

    for arch in sass:
        a_major, a_minor, exact = parse(arch)
        if (a_major, a_minor) == (major, minor) or (not exact and a_major == major and a_minor <= minor):
            return None
    for arch in ptx:
        a_major, a_minor, exact = parse(arch)
        if not exact and (a_major, a_minor) <= (major, minor):
            return None
    return (f"the extension holds CUDA code for sm_{', sm_'.join(sass) or '-'} and PTX for "
            f"compute_{', compute_'.join(ptx) or '-'}, none of which runs on this GPU (compute capability "
            f"{major}.{minor}); rebuild with -C cmake.define.IMU_FAST_CUDA_ARCHITECTURES=\"{major}{minor}\" "
            f"(README: Building)")


@functools.cache
def driver_problem() -> str | None:
    """Why the installed driver cannot run the extension's statically linked CUDA runtime, or None."""
    if not native_cuda_available():
        return None
    runtime, driver = int(native.cuda_runtime_version), int(native.cuda_driver_version())
    if driver == 0:
        return "no CUDA driver found (cudaDriverGetVersion returned 0)"
    if driver < runtime:
        return (f"the extension links the CUDA {_version(runtime)} runtime, but the driver supports CUDA "
                f"{_version(driver)} only; install a driver of the CUDA {_version(runtime)} generation (see "
                f"README: GPU machines) or rebuild with an nvcc no newer than the driver")
    return None
