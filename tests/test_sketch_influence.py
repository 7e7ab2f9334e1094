"""Sketch-space influence against its own float64 reference (full, diagonal and identity Fisher,
per layer or over all, Kronecker and JL), against exact IMU when the projections are the
identity, through both entry points, on every backend, cached or recomputed."""

import pytest
import torch
from conftest import BACKENDS, SmallNet, mismatch, rel_err, warmed
from oracle import influence as diagonal_influence
from sketch_oracle import exact_sketches, grads_by_name
from torch import nn

from imu_fast import SketchConfig, gradient_sketches, influence_scores, sketch_influence
from imu_fast.influence import sketch_influence_ref

TOL = 1e-9


class MLP(nn.Module):
    def __init__(self, d=6, width=20, classes=4):
        super().__init__()
        self.a = nn.Linear(d, width)
        self.norm = nn.LayerNorm(width)
        self.b = nn.Linear(width, classes)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


def data(n=17, d=6, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=g), torch.randint(0, classes, (n,), generator=g)


def model(seed=0):
    torch.manual_seed(seed)
    return MLP().double().eval()


CASES = [SketchConfig(dim=16, other_dim=5, fisher=f, blocks=b, dtype="float64", seed=2)
         for f in ("full", "diagonal", "identity") for b in ("layer", "all")]
CASES += [SketchConfig(kind="jl", dim=30, fisher=f, dtype="float64", seed=4) for f in ("full", "diagonal", "identity")]


@pytest.mark.parametrize("config", CASES, ids=lambda c: f"{c.kind}-{c.fisher}-{c.blocks}")
def test_sketch_influence_equals_its_float64_reference(config):
    m, (x, y) = model(), data()
    names = [n for n, _ in m.named_parameters()]
    samples = list(zip(x, y))
    sketches = gradient_sketches(m, None, (x, y), params=names, config=config, batch_size=5)
    exact = exact_sketches(sketches, grads_by_name(m, samples, names))
    ref = sketch_influence_ref(exact, sketches.layout.fisher_blocks(config.blocks), fisher=config.fisher,
                               damping=0.01)
    direct = influence_scores(m, (x, y), targets=names, sketch=config, batch_size=5)
    saved = sketch_influence(sketches)
    for got in (direct, saved):
        assert rel_err(got.scores, ref) < TOL, mismatch(got.scores, ref, TOL)
        assert torch.equal(got.indices, torch.arange(17))
    labels = [label for label, _, _ in sketches.layout.fisher_blocks(config.blocks)]
    assert list(direct.mean_grad) == labels
    assert list(direct.fisher) == ([] if config.fisher == "identity" else labels)


def test_identity_projections_give_exact_diagonal_imu_and_the_full_fisher_influence():
    m, (x, y) = model(1), data(seed=1)
    names = ["a.weight", "b.weight", "b.bias"]
    big = SketchConfig(dim=64 * 64, other_dim=64, fisher="diagonal", dtype="float64")
    got = influence_scores(m, (x, y), targets=names, sketch=big, batch_size=6)
    exact = influence_scores(m, (x, y), targets=names, batch_size=6)
    assert rel_err(got.scores, exact.scores) < TOL
    g = grads_by_name(m, list(zip(x, y)), names)
    flat = torch.cat([g[n].reshape(17, -1) for n in names], dim=1)
    assert rel_err(got.scores, diagonal_influence(flat)) < TOL
    full = influence_scores(m, (x, y), targets=names, sketch=big.replace(fisher="full", blocks="all"), batch_size=6)
    f = flat.T @ flat / 17 + 0.01 * torch.eye(flat.shape[1], dtype=torch.float64)
    ref = -(flat @ torch.linalg.solve(f, flat.mean(0)))
    assert rel_err(full.scores, ref) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_and_the_memory_budget_agree(backend):
    m, (x, y) = model(2), data(seed=2)
    config = SketchConfig(dim=9, other_dim=4, dtype="float64")
    ref = influence_scores(m, (x, y), targets=[m.a, m.b], sketch=config, backend="torch", batch_size=4)
    got = influence_scores(m, (x, y), targets=[m.a, m.b], sketch=config, backend=backend, batch_size=4)
    recomputed = influence_scores(m, (x, y), targets=[m.a, m.b], sketch=config, backend=backend, batch_size=4,
                                  memory_budget=0)
    assert got.backend == backend
    assert rel_err(got.scores, ref.scores) < TOL and torch.equal(recomputed.scores, got.scores)


def test_default_influence_parameters_are_the_classifier_head():
    torch.manual_seed(3)
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    net = warmed(SmallNet(5, 8, 3).double(), x)
    config = SketchConfig(dim=4, other_dim=2, dtype="float64")
    found = influence_scores(net, (x, y), sketch=config)
    named = influence_scores(net, (x, y), sketch=config, head=net.fc)
    targets = influence_scores(net, (x, y), sketch=config, targets=[net.fc])
    assert found.head == "fc.weight, fc.bias" and torch.equal(found.scores, named.scores)
    assert torch.equal(found.scores, targets.scores)
    assert net.training  # modes restored


def test_float32_models_score_in_float32():
    m = model(4).float()
    x, y = data(seed=4)
    got = influence_scores(m, (x.float(), y), targets=["a.weight"], sketch=SketchConfig(dim=16))
    assert got.scores.dtype == torch.float32 and torch.isfinite(got.scores).all()


def test_bad_sketch_arguments_are_named():
    m, (x, y) = model(), data()
    with pytest.raises(TypeError, match="sketch must be an imu_fast.SketchConfig"):
        influence_scores(m, (x, y), targets=["a.weight"], sketch="kronecker")
    with pytest.raises(TypeError, match="sketch_influence takes a SketchSet"):
        sketch_influence(torch.zeros(3, 3))
    s = gradient_sketches(m, None, (x, y), params=["a.weight"], config=SketchConfig(dim=4))
    with pytest.raises(ValueError, match="fisher must be one of"):
        sketch_influence(s, fisher="kfac")
    with pytest.raises(FloatingPointError, match="not positive definite"):
        sketch_influence(s.__class__(torch.zeros(17, 4), s.indices, s.layout, s.config, s.metadata), damping=0.0)
