"""``unlearn`` changes only what it is asked to change: frozen parameters stay frozen and bit-identical
under every method, the optimiser sees exactly the trained parameters, and the report says so."""

import pytest
import torch
from conftest import SmallNet, warmed

from imu_fast import unlearn
from imu_fast.lm import causal_lm_losses

METHODS = ["imu", "imu-uniform", "ga", "npo", "rl", "ft", "retrain"]


def task():
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    return warmed(SmallNet(5, 8, 3), x), x, y


def run(model, method, x, y):
    retain = (x[20:], y[20:]) if method in ("ft", "retrain") else None
    settings = {"top_fraction": 1.0} if method == "imu" else {}
    return unlearn(model, (x[:20], y[:20]), method=method, retain=retain, epochs=2, batch_size=8, lr=0.05, **settings)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_parameters_stay_frozen_and_identical(method, monkeypatch):
    model, x, y = task()
    frozen = [model.body[0].weight, model.fc.bias]
    for p in frozen:
        p.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    real_sgd = torch.optim.SGD

    def spy(params, **kw):
        params = list(params)
        seen.append({id(p) for p in params})
        return real_sgd(params, **kw)

    monkeypatch.setattr(torch.optim, "SGD", spy)
    report = run(model, method, x, y)
    after = dict(model.named_parameters())
    for name in ("body.0.weight", "fc.bias"):
        assert torch.equal(after[name], before[name]), name
        assert not after[name].requires_grad
    trainable = {"imu": ["fc.weight"], "imu-uniform": ["fc.weight"]}.get(
        method, ["body.0.bias", "body.1.weight", "body.1.bias", "fc.weight"])
    assert report.trained == trainable
    assert seen == [{id(after[n]) for n in trainable}]
    assert any(not torch.equal(after[n], before[n]) for n in trainable)
    left = {"imu": ["fc.bias"], "imu-uniform": ["fc.bias"]}.get(method, ["body.0.weight", "fc.bias"])
    assert report.left_frozen == left
    assert "BatchNorm running statistics were updated" in report.batchnorm


def test_a_wholly_frozen_head_is_an_error_not_a_silent_run():
    model, x, y = task()
    model.fc.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"every one of them is frozen .*\['fc.weight', 'fc.bias'\]|"
                                         r"would train \['fc.weight', 'fc.bias'\], but every one"):
        unlearn(model, (x, y))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_flags_modes_and_grads_are_restored():
    model, x, y = task()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    flags = [p.requires_grad for p in model.parameters()]
    report = unlearn(model, (x, y), epochs=1, freeze_batchnorm=True)
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert "unchanged" in report.batchnorm


def test_a_failing_run_puts_the_weights_back():
    model, x, y = task()
    y = y.clone()
    y[35] = 7  # found only when its batch comes up
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"labels out of range \[0, 3\) at forget-set indices \[35\]"):
        unlearn(model, (x, y), method="ga", epochs=1, batch_size=4)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_frozen_lora_base_stays_identical_under_imu_and_ga():
    from model_zoo import lora_llama, token_sequences

    for method in ("imu", "ga"):
        model = lora_llama()
        adapters = [n for n, p in model.named_parameters() if p.requires_grad]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        targets = adapters if method == "imu" else None
        report = unlearn(model, token_sequences(), method=method, targets=targets, loss_fn=causal_lm_losses,
                         epochs=1, batch_size=3, top_fraction=1.0, alpha=0.0)
        assert sorted(report.trained) == sorted(adapters)
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        assert changed and changed <= set(adapters), method  # the frozen base and embeddings are untouched
        assert all(p.requires_grad == (name in adapters) for name, p in model.named_parameters())
