"""The unlearning loop: what it updates, what it reports, and the IMU loss."""

import pytest
import torch
from conftest import SmallNet, warmed
from torch.nn import functional as F

from imu_fast import GA_BASELINE, IMU_PAPER, UnlearnConfig, imu_loss, unlearn


def task(seed=0, n=60, classes=4):
    torch.manual_seed(seed)
    model = SmallNet(5, 16, classes)
    x = torch.randn(n, 5)
    y = torch.randint(0, classes, (n,))
    # Fit a little so the forget loss starts low and gradient ascent has something to undo.
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return warmed(model, x), x, y


def forget_loss(model, x, y):
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_imu_updates_only_the_head_and_raises_forget_loss():
    model, x, y = task()
    before, loss0 = snapshot(model), forget_loss(model, x, y)
    report = unlearn(model, (x, y), top_fraction=0.5, epochs=5, lr=0.05)
    after = model.state_dict()
    assert 0 < report.n_kept <= 60 and report.n_kept == int((report.weights > 0).sum())
    assert report.scores is not None and report.scores.shape == (60,)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])
    assert forget_loss(model, x, y) > loss0
    assert report.epochs_run == 5 and len(report.epoch_forget_loss) == 5
    assert report.influence_seconds > 0 and report.update_seconds > 0


def test_batchnorm_statistics_drift_unless_frozen():
    model, x, y = task()
    running = model.body[1].running_mean.clone()
    unlearn(model, (x, y), epochs=1, top_fraction=1.0)
    assert not torch.equal(model.body[1].running_mean, running)
    model, x, y = task()
    running = model.body[1].running_mean.clone()
    unlearn(model, (x, y), epochs=1, top_fraction=1.0, freeze_batchnorm=True)
    assert torch.equal(model.body[1].running_mean, running)


def test_ga_updates_all_parameters_uniformly():
    model, x, y = task()
    before, loss0 = snapshot(model), forget_loss(model, x, y)
    report = unlearn(model, (x, y), method="ga", epochs=2)
    assert report.n_kept == 60 and torch.all(report.weights == 1) and report.scores is None
    assert not torch.equal(before["body.0.weight"], model.state_dict()["body.0.weight"])
    assert forget_loss(model, x, y) > loss0


def test_uniform_ablation_keeps_head_only_loop():
    model, x, y = task()
    before = snapshot(model)
    report = unlearn(model, (x, y), method="imu-uniform", epochs=1)
    assert report.n_kept == 60 and report.config["scope"] == "head" and report.config["alpha"] == 0.2
    assert torch.equal(before["body.0.weight"], model.state_dict()["body.0.weight"])


@pytest.mark.parametrize("refresh", ["epoch", "batch"])
def test_refresh_modes_run_and_raise_forget_loss(refresh):
    model, x, y = task()
    loss0 = forget_loss(model, x, y)
    report = unlearn(model, (x, y), refresh=refresh, epochs=3, batch_size=16, lr=0.05, top_fraction=0.5)
    assert report.epochs_run == 3 and report.influence_seconds > 0
    assert forget_loss(model, x, y) > loss0


def test_nothing_to_unlearn_is_reported():
    model, x, y = task()
    with pytest.MonkeyPatch.context() as mp:
        from imu_fast.methods.influence_params import InfluenceParams

        mp.setattr(InfluenceParams, "scores", lambda *a, **k: torch.ones(60))  # every sample "helps" retention
        before = snapshot(model)
        with pytest.warns(UserWarning, match="nothing will be unlearned"):
            report = unlearn(model, (x, y))
    assert report.n_kept == 0 and report.epochs_run == 0 and "nothing was unlearned" in report.message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_modes_and_requires_grad_restored():
    model, x, y = task()
    model.eval()
    model.body[0].weight.requires_grad_(False)
    unlearn(model, (x, y), epochs=1)
    assert not any(m.training for m in model.modules())
    assert not model.body[0].weight.requires_grad and model.fc.weight.requires_grad


def test_divergence_stops_cleanly():
    model, x, y = task()
    report = unlearn(model, (x, y), method="ga", lr=1e6, epochs=10, momentum=0.0)
    assert report.diverged and "non-finite" in report.message and report.epochs_run < 10


def test_imu_loss_formula():
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 0.0, 1.5])
    p = torch.tensor([1.0, -2.0])
    got = imu_loss(losses, w, l1_params=[p], alpha=0.2)
    assert abs(got.item() - (-(0.5 * 1 + 1.5 * 3) / 2.0 + 0.2 * 3.0)) < 1e-6
    got.backward()
    assert torch.allclose(losses.grad, -w / 2.0)


@pytest.mark.parametrize(
    "losses,weights,err",
    [
        (torch.ones(2, 2), torch.ones(2, 2), "1-D"),
        (torch.ones(3), torch.ones(2), "does not match"),
        (torch.ones(2), torch.tensor([-1.0, 1.0]), "non-negative"),
    ],
)
def test_imu_loss_bad_input(losses, weights, err):
    with pytest.raises(ValueError, match=err):
        imu_loss(losses, weights)


def test_imu_loss_of_a_batch_with_no_kept_sample_is_a_zero_in_the_graph():
    head = torch.nn.Linear(3, 2)
    losses = F.cross_entropy(head(torch.randn(4, 3)), torch.tensor([0, 1, 1, 0]), reduction="none")
    losses = torch.cat([losses[:3], torch.tensor([float("inf")])])  # even an infinite loss of a dropped sample
    loss = imu_loss(losses, torch.zeros(4), l1_params=head.parameters(), alpha=0.2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))


def test_config_validation_and_json():
    assert UnlearnConfig.from_json(IMU_PAPER.to_json()) == IMU_PAPER
    assert GA_BASELINE.scope == "all" and GA_BASELINE.weighting == "uniform"
    for bad in ({"lr": 0}, {"refresh": "sometimes"}, {"top_fraction": 2}, {"scope": "body"}):
        with pytest.raises(ValueError, match="UnlearnConfig"):
            IMU_PAPER.replace(**bad)
    with pytest.raises(TypeError, match="unknown unlearning settings"):
        IMU_PAPER.replace(learning_rate=1)
    model, x, y = task()
    with pytest.raises(ValueError, match="unknown method"):
        unlearn(model, (x, y), method="magic")
