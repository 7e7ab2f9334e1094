"""Each head op: the reference against autograd, and every backend against the reference."""

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


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c,d", SHAPES[:4])
def test_references_match_autograd(n, c, d, bias, rng):
    e = torch.randn(n, c, dtype=torch.float64, generator=rng)
    h = torch.randn(n, d, dtype=torch.float64, generator=rng)
    g = per_sample_head_grads(e, h, bias)
    grad_sum, fisher_sum = head_moments_ref(e, h, bias)
    assert rel_err(grad_sum, g.sum(0)) < 1e-13
    assert rel_err(fisher_sum, (g * g).sum(0)) < 1e-13
    m = torch.randn(c, d + bias, dtype=torch.float64, generator=rng)
    assert rel_err(head_influence_ref(e, h, m, bias), -(g * m).sum((1, 2))) < 1e-13


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c,d", SHAPES)
def test_backends_match_reference(backend, dtype, bias, n, c, d, rng):
    e = torch.randn(n, c, dtype=torch.float64, generator=rng)
    h = torch.randn(n, d, dtype=torch.float64, generator=rng)
    m = torch.randn(c, d + bias, dtype=torch.float64, generator=rng)
    ref_g, ref_f = head_moments_ref(e, h, bias)
    ref_i = head_influence_ref(e, h, m, bias)
    g, f = head_moments(e.to(dtype), h.to(dtype), bias, backend=backend)
    i = head_influence(e.to(dtype), h.to(dtype), m.to(dtype), bias, backend=backend)
    assert g.dtype == dtype and i.dtype == dtype
    tol = TOL[dtype]
    assert rel_err(g, ref_g) < tol, mismatch(g, ref_g, tol)
    assert rel_err(f, ref_f) < tol, mismatch(f, ref_f, tol)
    assert rel_err(i, ref_i) < tol * 10, mismatch(i, ref_i, tol * 10)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_zero_rows(backend):
    e, h = torch.zeros(0, 3), torch.zeros(0, 4)
    g, f = head_moments(e, h, True, backend=backend)
    assert g.shape == (3, 5) and not g.any() and not f.any()
    assert head_influence(e, h, torch.ones(3, 5), True, backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", [b for b in AVAILABLE if b != "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(backend, dtype, rng):
    e = torch.randn(300, 7, generator=rng).to(dtype)
    h = torch.randn(300, 40, generator=rng).to(dtype)
    g, f = head_moments(e, h, True, backend=backend)
    assert g.dtype == torch.float32
    ref_g, ref_f = head_moments_ref(e.double(), h.double(), True)
    assert rel_err(g, ref_g) < 1e-5 and rel_err(f, ref_f) < 1e-5


def test_bad_operands():
    with pytest.raises(ValueError, match="number of samples"):
        head_moments(torch.zeros(3, 2), torch.zeros(4, 5), True)
    with pytest.raises(ValueError, match="shape"):
        head_moments(torch.zeros(3), torch.zeros(3, 5), True)
    with pytest.raises(ValueError, match="M must have shape"):
        head_influence(torch.zeros(3, 2), torch.zeros(3, 5), torch.zeros(2, 5), True)
    with pytest.raises(ValueError, match="backend must be one of"):
        head_moments(torch.zeros(3, 2), torch.zeros(3, 5), True, backend="gpu")
    if backends()["cpu"]["available"]:
        with pytest.raises(TypeError, match="float32 or float64"):
            head_moments(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 5, dtype=torch.int64), True, backend="cpu")
        with pytest.raises(TypeError, match="share one dtype"):
            head_moments(torch.zeros(3, 2), torch.zeros(3, 5, dtype=torch.float64), True, backend="cpu")
