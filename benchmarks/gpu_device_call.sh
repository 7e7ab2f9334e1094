#!/usr/bin/env bash
# One GPU-machine call: check the build tools there, build and install imu_fast with its CUDA
# kernels into that machine's own Python (keeping its torch and Triton), list the GPU code the
# extension holds, run benchmarks/gpu_check.py, then the small cases under compute-sanitizer.
#
#   OUT=/some/folder bash benchmarks/gpu_device_call.sh      # results and logs go to $OUT
#
# The machine is offline: the build uses --no-build-isolation --no-deps, so scikit-build-core,
# pybind11, cmake and ninja must already be installed there (checked first, with a clear message).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-/tmp/imu_fast_gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

"$PY" - <<'PYCHECK' || exit 2
import importlib.util
import shutil
import sys

need = {"scikit_build_core": "scikit-build-core", "pybind11": "pybind11", "torch": "torch", "triton": "triton"}
missing = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
if shutil.which("cmake") is None and importlib.util.find_spec("cmake") is None:
    missing.append("cmake")
if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
    missing.append("ninja")
if shutil.which("nvcc") is None:
    missing.append("nvcc (the CUDA compiler, on the PATH)")
if missing:
    sys.exit("gpu_device_call: cannot build offline here, missing: " + ", ".join(missing)
             + ". Carry them as wheels (pip download ... on a machine with a registry) or install them first.")
import scikit_build_core, pybind11, torch, triton  # noqa: E401
print(f"build tools: scikit-build-core {scikit_build_core.__version__}, pybind11 {pybind11.__version__}, "
      f"torch {torch.__version__}, triton {triton.__version__}, python {sys.version.split()[0]}")
PYCHECK

nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/nvidia_smi.txt"
nvcc --version | tail -2

echo "== build and install (log: $OUT/build.log)"
start=$(date +%s)
if ! "$PY" -m pip install --no-build-isolation --no-deps -v "$REPO" -C cmake.define.IMU_FAST_CUDA=ON \
    >"$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "gpu_device_call: the build failed (full log in $OUT/build.log)"
  exit 3
fi
echo "built in $(( $(date +%s) - start )) s"

cd /tmp  # import the installed package, never the source tree
SO=$("$PY" -c "import imu_fast._C as c; print(c.__file__)")
if command -v cuobjdump >/dev/null; then
  cuobjdump --list-elf "$SO" | tee "$OUT/cuobjdump.txt"
  cuobjdump --list-ptx "$SO" | tee -a "$OUT/cuobjdump.txt"
fi

echo "== gpu_check"
timeout 420 "$PY" "$REPO/benchmarks/gpu_check.py" --out "$OUT"
status=$?

if command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer (memcheck, small cases, CUDA backend)"
  timeout 120 compute-sanitizer --tool memcheck --print-limit 20 "$PY" "$REPO/benchmarks/gpu_check.py" --small \
    --in-process --backends cuda --out "$OUT/sanitizer" >"$OUT/sanitizer.log" 2>&1
  echo "compute-sanitizer exit $?; $(grep -c 'Invalid\|ERROR SUMMARY' "$OUT/sanitizer.log") report lines"
  grep "ERROR SUMMARY" "$OUT/sanitizer.log"
fi
exit $status
