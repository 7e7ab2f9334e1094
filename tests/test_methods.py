"""The baselines behind ``unlearn``: NPO, RL, FT, Retrain (and GA / IMU for comparison).

One small MLP is trained once on 400 real digits (scikit-learn's copy; nothing is downloaded):
40 of them form the forget set, 360 the retain set. Each test unlearns from a copy of it.
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from imu_fast import IMU_PAPER, UnlearnConfig, npo_loss, unlearn
from imu_fast.data import load_digits_split
from imu_fast.methods import random_labels
from imu_fast.methods.finetune import reinitialise
from imu_fast.methods.random_labels import random_wrong_labels
from imu_fast.models import TrainSettings, accuracy, train_classifier

ASCENT = dict(epochs=10, batch_size=20, lr=0.02)  # strong enough to move a 40-sample forget set


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def trained():
    data = load_digits_split(0)
    x, y = data.x_train[:400], data.y_train[:400]
    model = train_classifier(mlp(), x, y, TrainSettings(epochs=30, lr=1e-2))
    return model, (x[:40], y[:40]), (x[40:], y[40:])


@pytest.fixture
def task(trained):
    model, forget, retain = trained
    return copy.deepcopy(model), forget, retain


def forget_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x), y).item()


class Untouchable(Dataset):
    """A forget set whose samples must never be read (only its size may be)."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        raise AssertionError("a retain-using method read a forget sample")


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("method,settings", [("ga", ASCENT), ("npo", ASCENT), ("rl", ASCENT), ("imu", {})])
def test_forget_metrics_move_the_right_way(task, method, settings):
    model, (xf, yf), _ = task
    loss0, acc0 = forget_loss(model, xf, yf), accuracy(model, xf, yf)
    report = unlearn(model, (xf, yf), method=method, **settings)
    assert forget_loss(model, xf, yf) > loss0 + 0.5
    assert accuracy(model, xf, yf) < acc0 - 0.2
    epochs = settings.get("epochs", IMU_PAPER.epochs)
    assert report.method == method and report.epochs_run == epochs and len(report.epoch_forget_loss) == epochs
    assert all(math.isfinite(v) for v in report.epoch_objective + report.epoch_forget_loss)
    assert report.n_forget == 40 and 0 < report.n_kept <= 40 and report.update_seconds > 0
    assert not report.diverged
    if method in ("npo", "rl"):
        assert report.n_kept == 40 and report.weights is None and report.influence_seconds == 0


def test_npo_loss_formula_and_sign():
    beta = 0.1
    log_p = torch.tensor([-0.1, -2.0, -30.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-0.2, -1.0, -0.05], dtype=torch.float64)
    got = npo_loss(log_p, ref, beta)
    closed = (2 / beta) * torch.log1p(torch.exp(beta * (log_p - ref))).mean()  # (2/β) log(1 + (π/π_ref)^β)
    assert got.item() == pytest.approx(closed.item(), rel=1e-12)
    assert npo_loss(ref, ref, beta).item() == pytest.approx(2 / beta * math.log(2))
    got.backward()
    assert (log_p.grad > 0).all()  # the loss rises with the forget likelihood: minimising lowers it
    expected = 2 * torch.sigmoid(beta * (log_p - ref)) / 3  # ∂L/∂log π_i = 2σ(βΔ_i)/N
    assert torch.allclose(log_p.grad, expected.detach())
    assert math.isfinite(npo_loss(torch.tensor([-1e4]), torch.tensor([0.0]), beta).item())
    with pytest.raises(ValueError, match="beta"):
        npo_loss(ref, ref, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        npo_loss(ref, ref[:2], beta)


def test_npo_starts_as_ga_and_its_loss_falls_as_the_likelihood_drops(task):
    model, (xf, yf), _ = task
    # At theta = theta_ref the NPO gradient is GA's: one full-batch SGD step must land on the same weights.
    one_step = dict(epochs=1, batch_size=40, lr=0.05, momentum=0.0, weight_decay=0.0)
    ga, npo = copy.deepcopy(model), copy.deepcopy(model)
    unlearn(ga, (xf, yf), method="ga", **one_step)
    unlearn(npo, (xf, yf), method="npo", **one_step)
    for p, q in zip(ga.parameters(), npo.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    # A longer run: the objective and the forget log-likelihood fall together.
    with torch.no_grad():
        ref = F.log_softmax(model.eval()(xf), 1).gather(1, yf[:, None]).squeeze(1)
    report = unlearn(model, (xf, yf), method="npo", **ASCENT)
    with torch.no_grad():
        after = F.log_softmax(model.eval()(xf), 1).gather(1, yf[:, None]).squeeze(1)
    assert after.mean() < ref.mean() - 1
    assert report.epoch_objective[-1] < report.epoch_objective[0]
    assert npo_loss(after, ref, 0.1) < npo_loss(ref, ref, 0.1)


def test_random_labels_are_wrong_and_seeded(task, monkeypatch):
    y = torch.arange(10).repeat(50)
    offsets = torch.randint(1, 10, (500,), generator=torch.Generator().manual_seed(0))
    wrong = random_wrong_labels(y, offsets, 10)
    assert (wrong != y).all() and wrong.min() == 0 and wrong.max() == 9
    model, forget, _ = task
    seen = []  # (true, trained-on) labels of every batch the run trains on

    def spy(y, offsets, num_classes):
        out = random_wrong_labels(y, offsets, num_classes)
        seen.append((y.clone(), out.clone()))
        return out

    monkeypatch.setattr(random_labels, "random_wrong_labels", spy)
    unlearn(copy.deepcopy(model), forget, method="rl", epochs=3, batch_size=8)
    true, used = map(torch.cat, zip(*seen))
    assert len(true) == 120 and (used != true).all() and len(used.unique()) == 10
    monkeypatch.undo()
    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    unlearn(a, forget, method="rl", epochs=2)
    unlearn(b, forget, method="rl", epochs=2)
    unlearn(c, forget, method="rl", epochs=2, seed=1)
    assert same_weights(a, b) and not same_weights(a, c)


def test_ft_keeps_retain_accuracy_and_never_reads_the_forget_set(task):
    model, _, (xr, yr) = task
    acc0 = accuracy(model, xr, yr)
    report = unlearn(model, Untouchable(), method="ft", retain=(xr, yr), epochs=3)
    assert accuracy(model, xr, yr) >= acc0 - 0.01
    assert report.n_forget == 40 and report.n_kept == 0 and report.epochs_run == 3
    assert all(math.isnan(v) for v in report.epoch_forget_loss)  # not measured: D_f was never read
    head_only = unlearn(model, Untouchable(), method="ft", retain=(xr, yr), epochs=1, scope="head")
    assert head_only.epochs_run == 1  # the head was found on retain data, not on D_f


def test_retrain_reinitialises_then_learns_the_retain_set(task):
    model, _, (xr, yr) = task
    fresh = copy.deepcopy(model)
    rng = torch.get_rng_state()
    reinitialise(fresh, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert not same_weights(fresh, model)
    wiped = copy.deepcopy(model)
    unlearn(wiped, Untouchable(), method="retrain", retain=(xr, yr), epochs=0, seed=3)
    assert same_weights(wiped, fresh)  # seeded re-initialisation, nothing else when epochs=0
    report = unlearn(model, Untouchable(), method="retrain", retain=(xr, yr), lr=0.1, epochs=30, batch_size=32)
    assert accuracy(model, xr, yr) > 0.95
    assert report.epoch_objective[-1] < report.epoch_objective[0] and report.n_kept == 0


def test_retrain_init_fn(task):
    model, _, retain = task
    built = mlp(seed=7)
    unlearn(model, Untouchable(), method="retrain", retain=retain, epochs=0, init_fn=lambda m: mlp(seed=7))
    assert same_weights(model, built)

    def zero(m):
        for p in m.parameters():
            nn.init.zeros_(p)

    unlearn(model, Untouchable(), method="retrain", retain=retain, epochs=0, init_fn=zero)
    assert all((p == 0).all() for p in model.parameters())
    with pytest.raises(TypeError, match="init_fn must"):
        unlearn(model, Untouchable(), method="retrain", retain=retain, init_fn=lambda m: 3)


def test_retrain_refuses_modules_it_cannot_reset(task):
    model, forget, retain = task

    class Scaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.gain = inner, nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.inner(x) * self.gain

    wrapped = Scaled(model)
    before = copy.deepcopy(wrapped)
    with pytest.raises(ValueError, match="reset_parameters.*init_fn"):
        unlearn(wrapped, forget, method="retrain", retain=retain)
    assert same_weights(wrapped, before)  # refused before anything was wiped


def test_retain_argument_rules(task):
    model, forget, retain = task
    before = copy.deepcopy(model)
    for method in ("ft", "retrain"):
        with pytest.raises(ValueError, match="pass retain="):
            unlearn(model, forget, method=method)
    for method in ("imu", "ga", "imu-uniform", "npo", "rl"):
        with pytest.raises(ValueError, match="does not take retain="):
            unlearn(model, forget, method=method, retain=retain)
    with pytest.raises(ValueError, match="init_fn applies to method 'retrain' only"):
        unlearn(model, forget, method="ft", retain=retain, init_fn=lambda m: None)
    with pytest.raises(ValueError, match="the retain set is empty"):
        unlearn(model, forget, method="retrain", retain=(retain[0][:0], retain[1][:0]))
    assert same_weights(model, before)
    bad = retain[1].clone()
    bad[5] = 10
    with pytest.raises(ValueError, match=r"labels out of range \[0, 10\) at retain-set indices \[5\]"):
        unlearn(model, forget, method="ft", retain=(retain[0], bad))


def test_settings_a_method_does_not_use_are_refused(task):
    model, forget, _ = task
    with pytest.raises(ValueError, match="'npo' does not use alpha=0.2"):
        unlearn(model, forget, method="npo", alpha=0.2)
    with pytest.raises(ValueError, match="'rl' does not use .*weighting='influence'"):
        unlearn(model, forget, method="rl", config=IMU_PAPER)
    with pytest.raises(ValueError, match="'ga' does not use npo_beta=0.5"):
        unlearn(model, forget, method="ga", npo_beta=0.5)
    with pytest.raises(ValueError, match="npo_beta must be > 0"):
        UnlearnConfig(npo_beta=0)
    report = unlearn(model, forget, method="npo", npo_beta=0.5, epochs=1)
    assert report.config["npo_beta"] == 0.5 and report.epoch_objective[0] == pytest.approx(4 * math.log(2), rel=0.05)


def test_head_scope_and_modes(task):
    model, forget, retain = task
    model.eval()
    model[1].weight.requires_grad_(False)
    before = copy.deepcopy(model)
    unlearn(model, forget, method="npo", scope="head", epochs=2)
    assert torch.equal(model[1].weight, before[1].weight) and torch.equal(model[1].bias, before[1].bias)
    assert not torch.equal(model[3].weight, before[3].weight)
    assert not model.training and not model[1].weight.requires_grad and model[1].bias.requires_grad
    with pytest.raises(ValueError, match="scope='head'"):
        unlearn(model, forget, method="retrain", retain=retain, scope="head")
