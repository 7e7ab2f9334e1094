"""Loads the compiled extension ``imu_fast._C`` if it was built; never fails the import."""

from __future__ import annotations

try:
    from . import _C as native  # type: ignore[attr-defined]

    NATIVE_ERROR: str | None = None
except ImportError as exc:  # a source checkout without a build, or a broken wheel
    native = None
    NATIVE_ERROR = (
        f"imu_fast._C could not be imported ({exc}); the C++/CUDA backends are unavailable. "
        "Reinstall with `pip install .` from the source tree to build it."
    )


def native_available() -> bool:
    return native is not None


def native_cuda_available() -> bool:
    return native is not None and bool(getattr(native, "with_cuda", False))
