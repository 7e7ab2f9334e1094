"""Each head op: the reference against autograd, and every backend against the reference in
float64 (and float32, float16) on awkward shapes, with and without a bias column."""

import pytest
import torch
from conftest import mismatch, rel_err

from imu_fast import backends
from imu_fast.ops import head_influence, head_influence_ref, head_moments, head_moments_ref

AVAILABLE = [name for name in ("torch", "cpu", "triton") if backends()[name]["available"]]
SHAPES = [(1, 1, 1), (1, 2, 3), (7, 3, 5), (33, 10, 17), (130, 100, 31), (257, 2, 67)]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def per_sample_head_grads(e, h, bias):
    """Autograd: gradient of sum_c e_ic z_ic w.r.t. (W, b) for each sample alone equals e_i h~_i^T."""
    n, c = e.shape
    rows = []
    for i in range(n):
        w = torch.zeros(c, h.shape[1], dtype=e.dtype, requires_grad=True)
        b = torch.zeros(c, dtype=e.dtype, requires_grad=True)
        z = h[i] @ w.T + (b if bias else 0)
        gw, gb = torch.autograd.grad((z * e[i]).sum(), (w, b), allow_unused=True)
        rows.append(torch.cat([gw, gb[:, None]], 1) if bias else gw)
    return torch.stack(rows)  # N x C x W


def operands(n, c, d, bias, rng, dtype=torch.float64):
    e = torch.randn(n, c, dtype=torch.float64, generator=rng)
    h = torch.randn(n, d, dtype=torch.float64, generator=rng)
    m = torch.randn(c, d + bias, dtype=torch.float64, generator=rng)
    return e.to(dtype), h.to(dtype), m.to(dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c,d", SHAPES[:4])
def test_references_match_autograd(n, c, d, bias, rng):
    e, h, m = operands(n, c, d, bias, rng)
    g = per_sample_head_grads(e, h, bias)
    grad_sum, fisher_sum = head_moments_ref(e, h, bias)
    assert rel_err(grad_sum, g.sum(0)) < 1e-13
    assert rel_err(fisher_sum, (g * g).sum(0)) < 1e-13
    assert rel_err(head_influence_ref(e, h, m, bias), -(g * m).sum((1, 2))) < 1e-13


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c,d", SHAPES)
def test_backends_match_reference(backend, dtype, bias, n, c, d, rng):
    e, h, m = operands(n, c, d, bias, rng)
    ref_g, ref_f = head_moments_ref(e, h, bias)
    ref_i = head_influence_ref(e, h, m, bias)
    g, f = head_moments(e.to(dtype), h.to(dtype), bias, backend=backend)
    i = head_influence(e.to(dtype), h.to(dtype), m.to(dtype), bias, backend=backend)
    assert g.dtype == dtype and f.dtype == dtype and i.dtype == dtype
    tol = TOL[dtype]
    assert rel_err(g, ref_g) < tol, mismatch(g, ref_g, tol)
    assert rel_err(f, ref_f) < tol, mismatch(f, ref_f, tol)
    assert rel_err(i, ref_i) < tol * 10, mismatch(i, ref_i, tol * 10)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_strided_operands(backend, rng):
    """Transposed and sliced views: Triton reads them through their strides, the others copy."""
    e, h, m = operands(41, 12, 70, True, rng)
    e_t = e.T.contiguous().T  # column-major
    h_s = torch.cat([h, h], 1)[:, ::2]  # every other column of a wider matrix
    m_t = m.T.contiguous().T
    assert not e_t.is_contiguous() and not h_s.is_contiguous()
    ref_g, ref_f = head_moments_ref(e, h_s.contiguous(), True)
    g, f = head_moments(e_t, h_s, True, backend=backend)
    assert rel_err(g, ref_g) < 1e-12 and rel_err(f, ref_f) < 1e-12
    ref_i = head_influence_ref(e, h_s.contiguous(), m, True)
    assert rel_err(head_influence(e_t, h_s, m_t, True, backend=backend), ref_i) < 1e-12


@pytest.mark.parametrize("backend", AVAILABLE)
def test_zero_rows(backend):
    e, h = torch.zeros(0, 3), torch.zeros(0, 4)
    g, f = head_moments(e, h, True, backend=backend)
    assert g.shape == (3, 5) and not g.any() and not f.any()
    assert head_influence(e, h, torch.ones(3, 5), True, backend=backend).shape == (0,)


# bf16 on Triton is left to benchmarks/gpu_check.py: the interpreter's bf16 dots are wrong.
@pytest.mark.parametrize("backend,dtype", [(b, d) for b in AVAILABLE for d in (torch.float16, torch.bfloat16)
                                           if not (b == "triton" and d == torch.bfloat16)])
def test_half_inputs_accumulate_in_float32(backend, dtype, rng):
    e = torch.randn(300, 7, generator=rng).to(dtype)
    h = torch.randn(300, 40, generator=rng).to(dtype)
    m = torch.randn(7, 41, generator=rng)
    g, f = head_moments(e, h, True, backend=backend)
    assert g.dtype == torch.float32 and f.dtype == torch.float32
    ref_g, ref_f = head_moments_ref(e.double(), h.double(), True)
    assert rel_err(g, ref_g) < 1e-5 and rel_err(f, ref_f) < 1e-5
    i = head_influence(e, h, m, True, backend=backend)
    assert i.dtype == torch.float32
    assert rel_err(i, head_influence_ref(e.double(), h.double(), m.double(), True)) < 1e-5


@pytest.mark.skipif("triton" not in AVAILABLE, reason="Triton not available")
@pytest.mark.parametrize("precision", ["tf32x3", "tf32", "ieee"])
def test_triton_precisions_run(precision, rng):
    """Every precision setting compiles and runs; its accuracy on tensor cores is gpu_check's job
    (the interpreter computes every float32 dot in IEEE float32)."""
    e, h, m = operands(50, 20, 30, True, rng, torch.float32)
    ref_g, _ = head_moments_ref(e.double(), h.double(), True)
    g, _ = head_moments(e, h, True, backend="triton", precision=precision)
    assert rel_err(g, ref_g) < 1e-5
    ref_i = head_influence_ref(e.double(), h.double(), m.double(), True)
    assert rel_err(head_influence(e, h, m, True, backend="triton", precision=precision), ref_i) < 1e-5


def test_bad_operands():
    with pytest.raises(ValueError, match="number of samples"):
        head_moments(torch.zeros(3, 2), torch.zeros(4, 5), True)
    with pytest.raises(ValueError, match="shape"):
        head_moments(torch.zeros(3), torch.zeros(3, 5), True)
    with pytest.raises(ValueError, match="M must have shape"):
        head_influence(torch.zeros(3, 2), torch.zeros(3, 5), torch.zeros(2, 5), True)
    with pytest.raises(ValueError, match="backend must be one of"):
        head_moments(torch.zeros(3, 2), torch.zeros(3, 5), True, backend="gpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        head_moments(torch.zeros(3, 2), torch.zeros(3, 5), True, precision="fp8")
    with pytest.raises(TypeError, match="floating-point"):
        head_moments(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 5, dtype=torch.int64), True)
    with pytest.raises(TypeError, match="share one dtype"):
        head_moments(torch.zeros(3, 2), torch.zeros(3, 5, dtype=torch.float64), True)


def test_every_operand_device_is_checked_before_a_launch():
    """M on another device than E and H is refused by name (a CUDA kernel given a host pointer
    would fault); the meta device stands in for a GPU here."""
    e, h = torch.zeros(3, 2), torch.zeros(3, 5)
    with pytest.raises(ValueError, match="M on meta"):
        head_influence(e, h, torch.zeros(2, 6, device="meta"), True)
    with pytest.raises(ValueError, match="H on meta"):
        head_moments(e, torch.zeros(3, 5, device="meta"), True)
