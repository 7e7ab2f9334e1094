"""Backend choice by capability: what the extension was built for against the device's compute
capability, the driver against the static CUDA runtime, and the build's refusal without nvcc."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from imu_fast import _native, backends
from imu_fast.dispatch import resolve_backend

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_cuda_build(monkeypatch):
    """The extension as if built with CUDA for sm_80/86/89/90 + PTX 90 (CUDA 13.0 runtime)."""
    fake = SimpleNamespace(with_cuda=True, cuda_sass_archs=["80", "86", "89", "90"], cuda_ptx_archs=["90"],
                           cuda_runtime_version=13000, cuda_driver_version=lambda: 13000)
    monkeypatch.setattr(_native, "native", fake)
    _native.driver_problem.cache_clear()
    yield fake
    _native.driver_problem.cache_clear()


@pytest.mark.parametrize("capability,runs", [((8, 0), True), ((8, 6), True), ((8, 9), True), ((9, 0), True),
                                             ((10, 0), True), ((12, 0), True), ((7, 5), False), ((7, 0), False)])
def test_arch_check(fake_cuda_build, capability, runs):
    problem = _native.arch_problem(capability)
    assert (problem is None) == runs, problem
    if not runs:
        assert f"compute capability {capability[0]}.{capability[1]}" in problem and "rebuild" in problem


def test_machine_code_runs_on_later_minor_versions_only(fake_cuda_build):
    fake_cuda_build.cuda_sass_archs, fake_cuda_build.cuda_ptx_archs = ["80"], []
    assert _native.arch_problem((8, 9)) is None  # sm_80 code runs on an sm_89 device
    assert _native.arch_problem((9, 0)) is not None  # but not on another major version
    fake_cuda_build.cuda_sass_archs = ["90a"]
    assert _native.arch_problem((9, 0)) is None and _native.arch_problem((10, 0)) is not None


@pytest.mark.parametrize("driver,problem", [(13000, None), (13020, None), (12080, "supports CUDA 12.8 only"),
                                            (0, "no CUDA driver")])
def test_driver_check(fake_cuda_build, driver, problem):
    fake_cuda_build.cuda_driver_version = lambda: driver
    got = _native.driver_problem()
    assert (got is None) if problem is None else (problem in got), got


def test_backends_say_why(fake_cuda_build):
    table = backends()
    assert set(table) == {"torch", "cpu", "triton", "cuda"}
    assert all(isinstance(v["reason"], str) and v["reason"] for v in table.values())
    if not torch.cuda.is_available():
        assert not table["cuda"]["available"] and "sm_80" in table["cuda"]["reason"]


def test_extension_reports_what_it_holds():
    """The real build: CUDA architectures listed when built with CUDA, none otherwise."""
    if not _native.native_available():
        pytest.skip(_native.NATIVE_ERROR)
    sass, ptx = _native.cuda_archs()
    if _native.native_cuda_available():
        assert sass and all(arch.rstrip("af").isdigit() for arch in sass + ptx)
        assert int(_native.native.cuda_runtime_version) >= 11000
    else:
        assert sass == ptx == ()


def test_resolve_backend_refuses_mismatches():
    assert resolve_backend("auto", torch.device("cpu")) in ("cpu", "torch")
    assert resolve_backend("auto", torch.device("meta")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("gpu", torch.device("cpu"))
    if backends()["cpu"]["available"]:
        with pytest.raises(RuntimeError, match="runs on cpu tensors"):
            resolve_backend("cpu", torch.device("meta"))
    if not backends()["cuda"]["available"]:
        with pytest.raises(RuntimeError, match="'cuda' is unavailable"):
            resolve_backend("cuda", torch.device("cpu"))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cuda_on_without_nvcc_fails_loudly(tmp_path):
    pybind11 = pytest.importorskip("pybind11")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "CUDACXX": str(tmp_path / "no-nvcc")}
    cmake = shutil.which("cmake")
    done = subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DIMU_FAST_CUDA=ON",
                           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "IMU_FAST_CUDA=ON but no CUDA compiler was found" in done.stdout + done.stderr
