"""influence_scores equals the batch-of-one autograd oracle (float64, eval mode)."""

import pytest
import torch
from conftest import BACKENDS, SmallCNN, SmallNet, mismatch, rel_err, warmed
from torch.utils.data import DataLoader, TensorDataset

import imu_fast
from imu_fast import influence_scores, influence_scores_ref

TOL = 1e-7


def make_task(n, classes, head_bias, seed, d_in=6, width=9):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallNet(d_in, width, classes, head_bias).double()
    x = torch.randn(n, d_in, dtype=torch.float64, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    warmed(model, torch.randn(64, d_in, dtype=torch.float64, generator=g))
    return model, x, y


@pytest.mark.parametrize("head_bias", [True, False])
@pytest.mark.parametrize("classes", [2, 10, 100])
@pytest.mark.parametrize("n,batch", [(1, 4), (23, 5), (40, 256)])
def test_scores_match_oracle(n, batch, classes, head_bias):
    model, x, y = make_task(n, classes, head_bias, seed=n * 100 + classes)
    ref = influence_scores_ref(model, (x, y), list(model.fc.parameters()))
    got = influence_scores(model, TensorDataset(x, y), batch_size=batch)
    assert got.scores.shape == (n,) and got.scores.device.type == "cpu"
    assert got.head == "fc"
    assert rel_err(got.scores, ref) <= TOL, mismatch(got.scores, ref, TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_matches_oracle_on_a_cnn(backend):
    torch.manual_seed(3)
    model = SmallCNN(classes=10).double()
    x = torch.randn(29, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 10, (29,))
    warmed(model, torch.randn(32, 1, 6, 6, dtype=torch.float64))
    ref = influence_scores_ref(model, (x, y), list(model.head.parameters()))
    got = influence_scores(model, (x, y), batch_size=8, backend=backend)
    assert rel_err(got.scores, ref) <= TOL, mismatch(got.scores, ref, TOL)


def test_float32_model_is_close():
    model, x, y = make_task(50, 10, True, seed=5)
    ref = influence_scores_ref(model, (x, y), list(model.fc.parameters()))
    got = influence_scores(model.float(), (x.float(), y))
    assert got.scores.dtype == torch.float32
    assert rel_err(got.scores, ref) < 1e-4


def test_shuffled_loader_keeps_dataset_order():
    model, x, y = make_task(30, 5, True, seed=7)
    plain = influence_scores(model, (x, y), batch_size=7).scores
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    shuffled = influence_scores(model, loader).scores
    assert rel_err(shuffled, plain) < 1e-13, mismatch(shuffled, plain, 1e-13)


def test_memory_budget_recomputes_without_changing_scores():
    model, x, y = make_task(45, 4, True, seed=8)
    cached = influence_scores(model, (x, y), batch_size=10).scores
    streamed = influence_scores(model, (x, y), batch_size=10, memory_budget=0).scores
    partly = influence_scores(model, (x, y), batch_size=10, memory_budget=3000).scores
    assert torch.allclose(streamed, cached, rtol=0, atol=1e-15)
    assert torch.allclose(partly, cached, rtol=0, atol=1e-15)


def test_statistics_match_their_definitions():
    model, x, y = make_task(12, 3, True, seed=9)
    res = influence_scores(model, (x, y), damping=0.05)
    params = list(model.fc.parameters())
    model.eval()
    rows = []
    for i in range(12):
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        gw, gb = torch.autograd.grad(loss, params)
        rows.append(torch.cat([gw, gb[:, None]], 1))
    g = torch.stack(rows)
    assert rel_err(res.fisher, (g * g).mean(0) + 0.05) < 1e-12
    assert rel_err(res.mean_grad, g.mean(0)) < 1e-12
    assert res.damping == 0.05 and res.n == 12


def test_model_modes_and_grad_flags_are_restored():
    model, x, y = make_task(10, 3, True, seed=10)
    model.train()
    model.body[1].eval()
    model.fc.weight.requires_grad_(False)
    before = {name: m.training for name, m in model.named_modules()}
    running = model.body[1].running_mean.clone()
    influence_scores(model, (x, y))
    assert {name: m.training for name, m in model.named_modules()} == before
    assert not model.fc.weight.requires_grad
    assert torch.equal(model.body[1].running_mean, running)  # eval mode: statistics untouched


def test_explicit_head_and_hf_style_output():
    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"logits": self.inner(x)}.get("logits"), None

    model, x, y = make_task(15, 4, True, seed=11)
    ref = influence_scores(model, (x, y)).scores
    got = influence_scores(Wrapped(model), (x, y), head=model.fc)
    assert got.head == "inner.fc"
    assert torch.allclose(got.scores, ref, rtol=0, atol=1e-15)


def test_public_api_names():
    for name in ("influence_scores", "influence_weights", "unlearn", "imu_loss", "backends"):
        assert callable(getattr(imu_fast, name))
