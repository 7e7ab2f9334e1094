"""The kernel ops as torch.library custom ops: schema, fake (meta) implementations and dispatch
checked by torch.library.opcheck on every backend here, and a fullgraph torch.compile through them."""

import pytest
import torch
from conftest import BACKENDS, rel_err

import imu_fast.ops  # noqa: F401  (registers torch.ops.imu_fast.*)
from imu_fast.ops import (
    head_influence,
    head_influence_ref,
    head_moments,
    head_moments_ref,
    outer_fisher,
    outer_fisher_and_norms_sq,
    outer_fisher_ref,
    outer_norms_sq,
    outer_norms_sq_ref,
)

OPS = ("outer_fisher", "outer_fisher_and_norms_sq", "outer_norms_sq", "head_moments", "head_influence")


def outer_args(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 19, 21, dtype=dtype, generator=g), torch.randn(3, 19, 10, dtype=dtype, generator=g)


def head_args(dtype=torch.float64):
    g = torch.Generator().manual_seed(4)
    e, h = torch.randn(37, 6, dtype=dtype, generator=g), torch.randn(37, 17, dtype=dtype, generator=g)
    return e, h, torch.randn(6, 18, dtype=dtype, generator=g)


def test_every_kernel_op_is_registered():
    for name in OPS:
        assert hasattr(torch.ops.imu_fast, name), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_opcheck(backend, dtype):
    a, b = outer_args(dtype)
    e, h, m = head_args(dtype)
    cases = [
        (torch.ops.imu_fast.outer_fisher.default, (a, b, backend, "tf32x3")),
        (torch.ops.imu_fast.outer_fisher_and_norms_sq.default, (a, b, backend, "tf32x3")),
        (torch.ops.imu_fast.outer_norms_sq.default, (a, b, backend, "gram", "tf32x3")),
        (torch.ops.imu_fast.outer_norms_sq.default, (a, b, backend, "tiled", "tf32x3")),
        (torch.ops.imu_fast.head_moments.default, (e, h, True, backend, "tf32x3")),
        (torch.ops.imu_fast.head_moments.default, (e, h, False, backend, "tf32x3")),
        (torch.ops.imu_fast.head_influence.default, (e, h, m, True, backend, "tf32x3")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_fake_implementations_give_the_real_shapes_and_dtypes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    a, b = outer_args(torch.bfloat16)
    e, h, m = head_args(torch.float64)
    m = m[:, :17].contiguous()
    mode = FakeTensorMode()
    fa, fb, fe, fh, fm = (mode.from_tensor(x) for x in (a, b, e, h, m))
    with mode:
        f = outer_fisher(fa, fb)
        f2, n2 = outer_fisher_and_norms_sq(fa, fb)
        g, fi = head_moments(fe, fh, False)
        i = head_influence(fe, fh, fm, False)
    assert f.shape == f2.shape == (10, 21) and f.dtype == torch.float32 and n2.shape == (3,)
    assert g.shape == fi.shape == (6, 17) and g.dtype == torch.float64 and i.shape == (37,)


def test_fullgraph_compile_through_the_ops():
    """One compiled function calling every op, with no graph break (fullgraph=True)."""
    backend = "cpu" if "cpu" in BACKENDS else "torch"

    def statistics(a, b, e, h, m):
        f, norms = outer_fisher_and_norms_sq(a, b, backend=backend)
        g, fisher = head_moments(e, h, True, backend=backend)
        scores = head_influence(e, h, m, True, backend=backend)
        return (outer_fisher(a, b, backend=backend) - f, outer_norms_sq(a, b, backend=backend, route="gram") - norms,
                g, fisher, scores * 2)

    torch._dynamo.reset()
    compiled = torch.compile(statistics, fullgraph=True, backend="aot_eager")
    a, b = outer_args()
    e, h, m = head_args()
    df, dn, g, fisher, scores = compiled(a, b, e, h, m)
    assert rel_err(df + outer_fisher_ref(a, b), outer_fisher_ref(a, b)) < 1e-12
    assert dn.abs().max() < 1e-9 * outer_norms_sq_ref(a, b).max()
    ref_g, ref_f = head_moments_ref(e, h, True)
    assert rel_err(g, ref_g) < 1e-12 and rel_err(fisher, ref_f) < 1e-12
    assert rel_err(scores, 2 * head_influence_ref(e, h, m, True)) < 1e-12
