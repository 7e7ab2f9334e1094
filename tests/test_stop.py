"""``unlearn(..., stop=StopCriteria(...))``: stopping on the forget set alone, and ``optimizer=``."""

import pytest
import torch
from conftest import SmallNet, warmed
from torch.nn import functional as F

from imu_fast import StopCriteria, UnlearnConfig, unlearn
from imu_fast.lm import causal_lm_losses


def task(seed=0, n=48):
    torch.manual_seed(seed)
    model = SmallNet(5, 16, 3)
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(80):  # fit, so that there is something to forget
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return warmed(model, x), x, y


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


RUN = dict(method="ga", epochs=20, batch_size=8, lr=0.01)


def test_forget_accuracy_target_stops_at_the_first_step_reaching_it():
    model, x, y = task()
    assert accuracy(model, x, y) > 0.8
    report = unlearn(model, (x, y), stop=StopCriteria(forget_accuracy_at_most=0.5), **RUN)
    assert report.stopped_by.startswith("forget accuracy") and 0 < report.steps < 20 * 6
    assert accuracy(model, x, y) == report.final_forget["forget_accuracy"] <= 0.5
    # The checks leave the run's randomness alone: the same run cut one step earlier is above the target.
    earlier, _, _ = task()
    unlearn(earlier, (x, y), stop=StopCriteria(max_steps=report.steps - 1), **RUN)
    assert accuracy(earlier, x, y) > 0.5
    again, _, _ = task()
    unlearn(again, (x, y), stop=StopCriteria(max_steps=report.steps), **RUN)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_forget_loss_target_and_partial_epochs():
    model, x, y = task()
    report = unlearn(model, (x, y), stop=StopCriteria(forget_loss_at_least=3.0), **RUN)
    assert report.stopped_by.startswith("forget loss") and report.final_forget["forget_loss"] >= 3.0
    assert report.epochs_run == -(-report.steps // 6)  # the epoch cut short is reported too
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() == pytest.approx(report.final_forget["forget_loss"], rel=1e-5)


def test_step_budget_and_check_every():
    model, x, y = task()
    report = unlearn(model, (x, y), stop=StopCriteria(max_steps=7), **RUN)
    assert report.steps == 7 and report.stopped_by == "step budget of 7 steps reached" and report.final_forget == {}
    model, x, y = task()
    report = unlearn(model, (x, y), stop=StopCriteria(forget_accuracy_at_most=0.5, check_every=4), **RUN)
    assert report.steps % 4 == 0 and report.stopped_by.startswith("forget accuracy")


def test_a_target_already_met_trains_nothing():
    model, x, y = task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = unlearn(model, (x, y), stop=StopCriteria(forget_accuracy_at_most=1.0), **RUN)
    assert report.steps == 0 and report.epochs_run == 0 and "after 0 steps" in report.stopped_by
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["imu", "npo", "rl"])
def test_every_retain_free_method_stops(method):
    model, x, y = task()
    settings = {"top_fraction": 1.0, "lr": 0.05} if method == "imu" else {"lr": 0.05}
    report = unlearn(model, (x, y), method=method, epochs=30, batch_size=8, stop=StopCriteria(forget_accuracy_at_most=0.5),
                     **settings)
    assert report.stopped_by and report.final_forget["forget_accuracy"] <= 0.5


def test_language_models_stop_on_the_forget_loss():
    from model_zoo import gpt2_lm, token_sequences

    model = gpt2_lm()
    report = unlearn(model, token_sequences(), method="ga", loss_fn=causal_lm_losses, epochs=50, batch_size=3, lr=0.05,
                     stop=StopCriteria(forget_loss_at_least=8.0))
    assert report.stopped_by.startswith("forget loss") and report.final_forget["forget_accuracy"] is None


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, ValueError, "give at least one of"),
    ({"forget_accuracy_at_most": 1.5}, ValueError, r"forget_accuracy_at_most must be in \[0, 1\]"),
    ({"forget_loss_at_least": float("nan")}, TypeError, "forget_loss_at_least must be a finite number"),
    ({"max_steps": -1}, ValueError, "max_steps must be an integer >= 0"),
    ({"max_steps": 2.5}, TypeError, "max_steps must be an integer"),
    ({"max_steps": 3, "check_every": 0}, ValueError, "check_every must be an integer >= 1"),
])
def test_stop_criteria_are_validated(kwargs, error, message):
    with pytest.raises(error, match=f"StopCriteria: {message}"):
        StopCriteria(**kwargs)


def test_stop_criteria_that_cannot_apply_are_refused():
    model, x, y = task()
    with pytest.raises(TypeError, match="stop must be an imu_fast.StopCriteria, got dict"):
        unlearn(model, (x, y), stop={"max_steps": 3})
    with pytest.raises(ValueError, match="method 'ft' never reads the forget set"):
        unlearn(model, (x, y), method="ft", retain=(x, y), stop=StopCriteria(forget_loss_at_least=2.0))
    with pytest.raises(ValueError, match="forget_accuracy_at_most needs classification data"):
        unlearn(model, (x, y), targets=["fc.weight"], loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"),
                stop=StopCriteria(forget_accuracy_at_most=0.1))
    report = unlearn(model, (x, y), method="ft", retain=(x, y), epochs=1, batch_size=8, stop=StopCriteria(max_steps=2))
    assert report.steps == 2


# --- optimisers -------------------------------------------------------------------------------


def test_sgd_is_the_default_and_adamw_is_configurable(monkeypatch):
    built = []
    for name in ("SGD", "AdamW"):
        real = getattr(torch.optim, name)

        def spy(params, real=real, name=name, **kw):
            built.append((name, kw))
            return real(params, **kw)

        monkeypatch.setattr(torch.optim, name, spy)
    model, x, y = task()
    unlearn(model, (x, y), method="ga", epochs=1)
    sgd_state = {k: v.clone() for k, v in model.state_dict().items()}
    model, x, y = task()
    unlearn(model, (x, y), method="ga", epochs=1, optimizer="adamw", lr=1e-3, betas=(0.8, 0.99), eps=1e-6,
            weight_decay=0.01)
    assert built == [("SGD", {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}),
                     ("AdamW", {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01})]
    assert not torch.equal(sgd_state["fc.weight"], model.state_dict()["fc.weight"])


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "adam"}, r"optimizer must be one of \('sgd', 'adamw'\)"),
    ({"optimizer": "adamw", "momentum": 0.5}, "optimizer='adamw' does not use momentum=0.5"),
    ({"betas": (0.8, 0.9)}, r"optimizer='sgd' does not use betas=\(0.8, 0.9\)"),
    ({"optimizer": "adamw", "betas": (0.9, 1.0)}, r"betas\[1\] must be in \[0, 1\)"),
    ({"optimizer": "adamw", "eps": 0}, "eps must be > 0"),
])
def test_optimizer_settings_are_validated(changes, message):
    with pytest.raises((ValueError, TypeError), match=f"UnlearnConfig: {message}"):
        UnlearnConfig().replace(**changes)


def test_adamw_settings_survive_json():
    cfg = UnlearnConfig(optimizer="adamw", betas=(0.8, 0.95), eps=1e-7)
    assert UnlearnConfig.from_json(cfg.to_json()) == cfg
