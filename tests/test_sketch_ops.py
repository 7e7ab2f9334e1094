"""The sketch ops: the counter-based generator against published Philox4x32-10 values and on every
backend, the JL projection and the Kronecker sketch on every backend against their references
over awkward shapes, the references against torch.func per-sample gradients, bad operands."""

import math

import pytest
import torch
from conftest import BACKENDS, mismatch, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import imu_fast.ops  # noqa: F401
from imu_fast import backends
from imu_fast._native import native
from imu_fast.ops import jl_project, jl_project_ref, kron_sketch, kron_sketch_ref
from imu_fast.ops.philox import philox4x32, projection_ref, signs_ref

TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
# Random123's known-answer vectors for philox4x32-10: (counter, key = (k0, k1)) -> words.
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,words", KAT)
def test_philox_matches_the_published_values(counter, key, words):
    seed = key[0] | key[1] << 32
    assert tuple(int(w) for w in philox4x32(*counter, seed)) == words
    if native is not None:
        assert tuple(native.philox4x32(*counter, seed)) == words


if backends()["triton"]["available"]:
    import triton
    import triton.language as tl

    from imu_fast.kernels.sketch_jl import sign_tile

    @triton.jit
    def _fill_signs(out, col0, j0, stream, role, seed, P: tl.constexpr, J: tl.constexpr):
        cols = col0 + tl.arange(0, P).to(tl.int64)
        js = j0 + tl.arange(0, J)
        tile = sign_tile(cols, j0 >> 7, js, stream, role, seed, tl.float32)
        tl.store(out + tl.arange(0, P)[:, None] * J + tl.arange(0, J)[None, :], tile)


@pytest.mark.skipif(not backends()["triton"]["available"], reason="triton unavailable")
def test_the_triton_sign_tile_is_the_reference():
    for col0, j0, stream, role, seed in [(0, 0, 0, 0, 0), (2**32 - 5, 128, 2**32 - 1, 2, 2**63 - 1),
                                         (12345, 192, 77, 1, 99)]:
        out = torch.empty(16, 64)
        _fill_signs[(1,)](out, col0, j0, stream, role, seed, P=16, J=64)
        ref = signs_ref(seed, stream, role, range(j0, j0 + 64), range(col0, col0 + 16), dtype=torch.float32).T
        assert torch.equal(out, ref)


def test_signs_are_balanced_and_streams_independent():
    a = signs_ref(7, 1, 0, range(256), range(512))
    b = signs_ref(7, 2, 0, range(256), range(512))
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(a.mean())) < 0.02 and abs(float((a * b).mean())) < 0.02
    assert torch.equal(a[100:140, 300:310], signs_ref(7, 1, 0, range(100, 140), range(300, 310)))


def operands(n, w, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, w, dtype=dtype, generator=g)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 5), w=st.sampled_from([1, 3, 17, 130, 257]), k=st.sampled_from([1, 5, 64, 129, 300]),
       col0=st.sampled_from([0, 1000, 2**32 - 7, 2**35 + 3]))
def test_jl_reference_is_the_dense_product(n, w, k, col0):
    x = operands(n, w)
    r = projection_ref(3, 11, 0, k, col0, w)
    assert rel_err(jl_project_ref(x, col0=col0, k=k, seed=3, stream=11), x @ r.T) < 1e-14
    assert torch.allclose(r.abs(), torch.full_like(r, 1 / math.sqrt(k)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 70), w=st.sampled_from([1, 7, 33, 300]), k=st.sampled_from([1, 16, 100, 257]),
       col0=st.sampled_from([0, 517, 2**32 - 3]), seed=st.sampled_from([0, 1, 2**40 + 5]))
def test_jl_backends_match_the_reference(backend, dtype, n, w, k, col0, seed):
    x = operands(n, w, seed=n + w)
    ref = jl_project_ref(x, col0=col0, k=k, seed=seed, stream=2**31 + 9)
    got = jl_project(x.to(dtype), col0=col0, k=k, seed=seed, stream=2**31 + 9, backend=backend)
    assert got.dtype == dtype and got.shape == (n, k)
    assert rel_err(got, ref) < TOL[dtype], mismatch(got, ref, TOL[dtype])


# float32 X on the C++ backend: tf32x3 (three bfloat16 parts on AMX tiles where the CPU has them)
# reaches float32's accuracy, fewer parts less; "ieee" is the FMA kernel. Bounds: relative error.
CPU_PRECISION_TOL = {"ieee": 2e-6, "tf32x3": 2e-6, "tf32": 3e-5, "bf16": 8e-3}


@pytest.mark.skipif(not backends()["cpu"]["available"], reason="no C++ kernels")
@pytest.mark.parametrize("precision", sorted(CPU_PRECISION_TOL))
@pytest.mark.parametrize("n,w,k,col0", [(1, 1, 1, 0), (17, 300, 65, 3), (33, 513, 257, 2**33 + 1)])
def test_jl_cpu_precisions_hold_their_accuracy(precision, n, w, k, col0):
    x = operands(n, w, seed=w)
    ref = jl_project_ref(x, col0=col0, k=k, seed=9, stream=4)
    got = jl_project(x.float(), col0=col0, k=k, seed=9, stream=4, backend="cpu", precision=precision)
    assert got.dtype == torch.float32 and got.shape == (n, k)
    assert rel_err(got, ref) < CPU_PRECISION_TOL[precision], mismatch(got, ref, CPU_PRECISION_TOL[precision])
    if native.jl_amx_available() and precision == "bf16" and n >= 12:  # one part: rounded, so the tiles ran
        assert rel_err(got, ref) > 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_jl_reads_strided_rows_and_splits_add_up(backend):
    x = operands(9, 80)[:, ::2]  # non-unit column stride
    whole = jl_project(x, col0=40, k=70, seed=5, stream=3, backend=backend)
    parts = (jl_project(x[:, :17], col0=40, k=70, seed=5, stream=3, backend=backend)
             + jl_project(x[:, 17:], col0=57, k=70, seed=5, stream=3, backend=backend))
    assert rel_err(whole, jl_project_ref(x, col0=40, k=70, seed=5, stream=3)) < 1e-12
    assert rel_err(parts, whole) < 1e-12


def per_sample_linear_grads(a, b):
    w = torch.zeros(b.shape[2], a.shape[2], dtype=a.dtype)
    return vmap(grad(lambda w, a, b: ((a @ w.T) * b).sum()), in_dims=(None, 0, 0))(w, a, b)


def kron_operands(n, t, d_in, d_out, k_in, k_out, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*s, dtype=dtype, generator=g) for s in
                 ((n, t, d_in), (n, t, d_out), (d_in, k_in), (d_out, k_out)))


dims = st.sampled_from([1, 2, 5, 16, 33, 70])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), t=st.integers(1, 9), d_in=dims, d_out=dims, k_in=st.sampled_from([1, 3, 16, 20]),
       k_out=st.sampled_from([1, 4, 16, 33]))
def test_kron_reference_matches_torch_func(n, t, d_in, d_out, k_in, k_out):
    a, b, p_in, p_out = kron_operands(n, t, d_in, d_out, k_in, k_out)
    g = per_sample_linear_grads(a, b)
    assert rel_err(kron_sketch_ref(a, b, p_in, p_out), p_out.T @ g @ p_in) < 1e-13


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 5), t=st.integers(1, 40), d_in=dims, d_out=dims, k_in=st.sampled_from([1, 7, 16, 17]),
       k_out=st.sampled_from([2, 16, 40]), seed=st.integers(0, 99))
def test_kron_backends_match_the_reference(backend, dtype, n, t, d_in, d_out, k_in, k_out, seed):
    a, b, p_in, p_out = kron_operands(n, t, d_in, d_out, k_in, k_out, seed=seed)
    ref = kron_sketch_ref(a, b, p_in, p_out)
    got = kron_sketch(a.to(dtype), b.to(dtype), p_in, p_out, backend=backend)
    assert got.dtype == dtype and got.shape == (n, k_out, k_in)
    assert rel_err(got, ref) < TOL[dtype], mismatch(got, ref, TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_kron_reads_strided_operands(backend):
    a, b, p_in, p_out = kron_operands(3, 12, 20, 9, 4, 5)
    a_t = a.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    got = kron_sketch(a_t, b[:, :, :], p_in.T.contiguous().T, p_out, backend=backend)
    assert rel_err(got, kron_sketch_ref(a, b, p_in, p_out)) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_sketch_ops_opcheck(backend):
    x = operands(5, 40)
    a, b, p_in, p_out = kron_operands(2, 6, 9, 7, 3, 4)
    torch.library.opcheck(torch.ops.imu_fast.jl_project.default, (x, 3, 20, 9, 4, 0, backend, "tf32x3"))
    torch.library.opcheck(torch.ops.imu_fast.kron_sketch.default, (a, b, p_in, p_out, backend, "tf32x3"))


def test_bad_operands_are_named():
    x = operands(3, 4)
    with pytest.raises(ValueError, match="X must be a floating-point matrix"):
        jl_project(x[0], k=3, seed=0, stream=0)
    with pytest.raises(ValueError, match="k must be"):
        jl_project(x, k=0, seed=0, stream=0)
    with pytest.raises(ValueError, match="stream must be"):
        jl_project(x, k=2, seed=0, stream=2**32)
    with pytest.raises(ValueError, match="seed must be"):
        jl_project(x, k=2, seed=-1, stream=0)
    with pytest.raises(ValueError, match="col0 must be"):
        jl_project(x, k=2, seed=0, stream=0, col0=-3)
    a, b, p_in, p_out = kron_operands(2, 3, 4, 5, 2, 2)
    with pytest.raises(ValueError, match=r"P_in must be a \(4 x k\) matrix"):
        kron_sketch(a, b, p_out, p_out)
    with pytest.raises(ValueError, match="disagree on"):
        kron_sketch(a, b[:, :2], p_in, p_out)


def test_sketch_ops_trace_under_torch_compile():
    x = operands(4, 30)
    a, b, p_in, p_out = kron_operands(2, 5, 6, 7, 3, 4)

    def both(x, a, b):
        return jl_project(x, k=8, seed=1, stream=2).sum() + kron_sketch(a, b, p_in, p_out).sum()

    compiled = torch.compile(both, backend="aot_eager", fullgraph=True)
    assert rel_err(compiled(x, a, b), both(x, a, b)) < 1e-12
