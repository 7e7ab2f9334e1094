"""Compile every Triton kernel of imu_fast for sm_90 (H100/H200) on a machine without a GPU and
report whether its dots lower to Hopper's wgmma, with registers, spills and shared memory.

    python benchmarks/triton_sm90_check.py            # table; exit 1 if a dot meant for wgmma misses it
    python benchmarks/triton_sm90_check.py --json out.json

Each row is one kernel specialisation: operand dtype x precision at the GPU launch settings of
the kernel modules. float64 and precision "ieee" are expected to use FMAs (no tensor cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the real compiler, not the interpreter

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels import head_influence, head_moments, outer_gram, outer_tiles, sketch_jl, sketch_kron  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def signature(fn, pointers: dict, ints=(), constexprs=None, scalars=None):
    sig = {}
    for name in fn.arg_names:
        if name in (constexprs or {}):
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + pointers[name]
        elif name in (scalars or {}):
            sig[name] = scalars[name]
        else:
            sig[name] = "i64" if name in ints else "i32"
    return sig


# Scalar arguments that are not 32-bit integers (the JL kernel's seed and column offset, its scale).
SCALARS = {"seed": "i64", "col0": "i64", "scale": "fp32"}


def cases():
    """(label, kernel, pointers, constexprs, num_warps, wgmma expected) for every specialisation."""
    for dt, prec in [("fp32", "tf32x3"), ("fp32", "tf32"), ("fp32", "bf16"), ("fp32", "ieee"), ("bf16", "tf32x3"),
                     ("fp16", "tf32x3"), ("fp64", "ieee")]:
        acc = "fp64" if dt == "fp64" else "fp32"
        acc_tl = tl.float64 if dt == "fp64" else tl.float32
        want = dt != "fp64" and prec != "ieee"
        tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[dt]
        bt, bo, bk, w = outer_tiles._config(tdt, prec)
        modes = [(True, True, False), (True, False, False), (False, True, False)]
        if (dt, prec) == ("fp32", "tf32x3"):
            modes.append((True, True, True))  # 64-bit offset tiles (slices past 2^31 elements)
        for fisher, norms, off64 in modes:
            yield (f"outer_tiles fisher={fisher:d} norms={norms:d}{' off64' if off64 else ''} {dt} {prec}",
                   outer_tiles._outer_tiles_kernel, {"a_ptr": dt, "b_ptr": dt, "f_ptr": acc, "norms_ptr": acc},
                   dict(ACC=acc_tl, PRECISION=prec, FISHER=fisher, NORMS=norms, OFF64=off64, BLOCK_T=bt, BLOCK_O=bo,
                        BLOCK_K=bk), w, want)
        kind = "fp64" if dt == "fp64" else "fp32" if dt == "fp32" and prec != "bf16" else "half"
        bs, bd, w = outer_gram.CONFIG[kind]
        yield (f"outer_gram {dt} {prec}", outer_gram._outer_gram_kernel,
               {"a_ptr": dt, "b_ptr": dt, "out_ptr": acc, "pairs_ptr": "i32"},
               dict(ACC=acc_tl, PRECISION=prec, OFF64=False, BLOCK_S=bs, BLOCK_D=bd), w, want)
        for c in (10, 1000):
            bn, bc, bk, w = head_moments._config(c, tdt)
            yield (f"head_moments C={c} {dt} {prec}", head_moments._head_moments_kernel,
                   {"e_ptr": dt, "h_ptr": dt, "g_ptr": acc, "f_ptr": acc},
                   dict(ACC=acc_tl, PRECISION=prec, HAS_BIAS=True, BLOCK_N=bn, BLOCK_C=bc, BLOCK_K=bk), w, want)
            bn, bc, bk, w = head_influence._config(c, tdt)
            yield (f"head_influence C={c} {dt} {prec}", head_influence._head_influence_kernel,
                   {"e_ptr": dt, "h_ptr": dt, "m_ptr": acc, "out_ptr": acc},  # M is a float32/64 statistic
                   dict(ACC=acc_tl, PRECISION=prec, HAS_BIAS=True, M_OFF64=False, BLOCK_N=bn, BLOCK_C=bc, BLOCK_K=bk), w, want)
        bn, bp, bj, w = sketch_jl._config(tdt)
        yield (f"sketch_jl {dt} {prec}", sketch_jl._jl_kernel, {"x_ptr": dt, "out_ptr": acc},
               dict(ACC=acc_tl, PRECISION=prec, BLOCK_N=bn, BLOCK_P=bp, BLOCK_J=bj), w, want)
        for k in (16, 64):
            bt, bd, w = sketch_kron.config_for(tdt, k)
            yield (f"sketch_kron k={k}x{k} {dt} {prec}", sketch_kron._kron_kernel,
                   {"a_ptr": dt, "b_ptr": dt, "pin_ptr": dt, "pout_ptr": dt, "out_ptr": acc},
                   dict(ACC=acc_tl, PRECISION=prec, BLOCK_T=bt, BLOCK_D=bd, KI=k, KO=k), w, want)


def resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text))
    return {k.lower(): int(v) for k, v in found.items()}


def compile_one(fn, pointers, constexprs, num_warps):
    sig = signature(fn, pointers, constexprs=constexprs, scalars=SCALARS)
    src = ASTSource(fn, signature=sig, constexprs=constexprs)
    # Hopper pipelining as the launches get it by default (num_stages=3)
    compiled = triton.compile(src, target=TARGET, options={"num_warps": num_warps, "num_stages": 3})
    ptx = compiled.asm["ptx"]
    return {"wgmma": len(re.findall(r"wgmma\.mma_async", ptx)), "mma.sync": len(re.findall(r"\bmma\.sync", ptx)),
            **resources(compiled.asm["cubin"]), "shared": compiled.metadata.shared}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="", help="substring of the case labels to compile")
    args = parser.parse_args(argv)
    rows, bad = [], []
    print(f"triton {triton.__version__}, target sm_90")
    print(f"{'kernel':48s} {'wgmma':>6s} {'mma':>5s} {'reg':>4s} {'stack':>6s} {'smem':>6s}  expected")
    for label, fn, pointers, constexprs, warps, want in cases():
        if args.only not in label:
            continue
        try:
            info = compile_one(fn, pointers, constexprs, warps)
        except Exception as exc:  # report and go on: one failed lowering should not hide the rest
            info = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        ok = "error" not in info and (info["wgmma"] > 0) == want
        rows.append({"kernel": label, "want_wgmma": want, **info, "ok": ok})
        if not ok:
            bad.append(label)
        if "error" in info:
            print(f"{label:48s} ERROR {info['error']}")
        else:
            print(f"{label:48s} {info['wgmma']:6d} {info['mma.sync']:5d} {info.get('reg', -1):4d} "
                  f"{info.get('stack', 0):6d} {info.get('shared', 0):6d}  {'wgmma' if want else 'FMA'}"
                  f"{'' if ok else '  <-- MISMATCH'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
