"""One validation for every path: each bad input is an error naming the samples, on every entry point,
and the model is left as it was."""

import re

import pytest
import torch
from conftest import SmallNet
from torch import nn

from imu_fast import (UnlearnConfig, accuracy_percent, fisher_diagonal, influence_scores, influence_weights,
                      per_sample_grad_norms, unlearn)
from imu_fast.lm import causal_lm_losses

ENTRY_POINTS = {
    "influence (head)": lambda m, d: influence_scores(m, d, batch_size=4),
    "influence (targets)": lambda m, d: influence_scores(m, d, targets=[m.fc], batch_size=4),
    "per_sample_grad_norms": lambda m, d: per_sample_grad_norms(m, None, d, params=[m.body[0], m.fc], batch_size=4),
    "fisher_diagonal": lambda m, d: fisher_diagonal(m, None, d, params=[m.body[0], m.fc], batch_size=4),
    "unlearn imu": lambda m, d: unlearn(m, d, epochs=1, batch_size=4),
    "unlearn ga": lambda m, d: unlearn(m, d, method="ga", epochs=1, batch_size=4),
    "unlearn npo": lambda m, d: unlearn(m, d, method="npo", epochs=1, batch_size=4),
    "unlearn rl": lambda m, d: unlearn(m, d, method="rl", epochs=1, batch_size=4),
    "accuracy": lambda m, d: accuracy_percent(m, d, batch_size=4),
}


def model_and_data(n=10, classes=3):
    torch.manual_seed(0)
    model = SmallNet(4, 6, classes).eval()
    return model, torch.randn(n, 4), torch.randint(0, classes, (n,))


def labels_out_of_range(x, y):
    y[5], y[7] = 3, -1  # both in the second batch of four
    return (x, y), ValueError, r"labels out of range \[0, 3\) at \w+-set indices \[5, 7\] \(values \[3, -1\]\)"


def ignored_label(x, y):
    y[2] = -100
    return (x, y), ValueError, r"label -100 \(ignored\) at \w+-set indices \[2\]"


def float_labels(x, y):
    return (x, y.float()), TypeError, "labels must be integer class indices"


def integer_features(x, y):
    return (torch.randint(0, 255, x.shape), y), TypeError, "integer dtype torch.int64 but the model has no nn.Embedding"


def nan_inputs(x, y):
    x[6, 1] = float("nan")
    return (x, y), FloatingPointError, r"inputs contain NaN or Inf at \w+-set indices \[6\]"


def data_on_another_device(x, y):
    return (x.to("meta"), y), ValueError, "the model is on cpu but the .* are on meta"


def token_labels(x, y):
    return (x, torch.zeros(len(y), 5, dtype=torch.long)), ValueError, "one class index per sample"


CASES = [labels_out_of_range, ignored_label, float_labels, integer_features, nan_inputs, data_on_another_device,
         token_labels]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_classification_data_names_the_samples(entry, case):
    model, x, y = model_and_data()
    data, error, pattern = case(x, y)
    train = entry not in ("per_sample_grad_norms", "fisher_diagonal")  # these refuse train-mode BatchNorm
    model.train(train)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=pattern):
        ENTRY_POINTS[entry](model, data)
    assert model.training == train and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
@pytest.mark.parametrize("entry", ["influence (head)", "influence (targets)", "per_sample_grad_norms"])
def test_narrow_integer_labels_are_class_indices(dtype, entry):
    model, x, y = model_and_data()
    want = ENTRY_POINTS[entry](model, (x, y))
    got = ENTRY_POINTS[entry](model, (x, y.to(dtype)))
    want, got = (want.scores, got.scores) if hasattr(want, "scores") else (want, got)
    assert torch.equal(got, want)


class TinyLM(nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        self.emb = nn.Embedding(vocab, 6)
        self.out = nn.Linear(6, vocab)

    def forward(self, input_ids, attention_mask=None):
        return self.out(torch.tanh(self.emb(input_ids)))


def lm_samples(n=6, t=5):
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        ids = torch.randint(0, 11, (t,), generator=g)
        samples.append({"input_ids": ids, "attention_mask": torch.ones(t, dtype=torch.long), "labels": ids.clone()})
    return samples


LM_ENTRY_POINTS = {
    "influence (targets)": lambda m, d, f: influence_scores(m, d, targets=[m.out], loss_fn=f, batch_size=4),
    "per_sample_grad_norms": lambda m, d, f: per_sample_grad_norms(m, f, d, batch_size=4),
    "fisher_diagonal": lambda m, d, f: fisher_diagonal(m, f, d, batch_size=4),
    "unlearn imu": lambda m, d, f: unlearn(m, d, targets=[m.out], loss_fn=f, epochs=1, batch_size=4),
    "unlearn ga": lambda m, d, f: unlearn(m, d, method="ga", loss_fn=f, epochs=1, batch_size=4),
    "unlearn npo": lambda m, d, f: unlearn(m, d, method="npo", loss_fn=f, epochs=1, batch_size=4),
}


def no_target_tokens(samples):
    samples[4]["labels"] = torch.full((5,), -100)
    return samples, causal_lm_losses, ValueError, r"no token to predict \(all labels -100\) at \w+-set indices \[4\]"


def nan_losses(samples):
    def loss_fn(model, batch):
        losses = causal_lm_losses(model, batch)
        return losses.masked_fill(batch["input_ids"][:, 0] == batch["input_ids"][:, 0].max(), float("nan"))

    first = [int(s["input_ids"][0]) for s in samples]
    worst = [i for i in range(4) if first[i] == max(first[:4])]
    return samples, loss_fn, FloatingPointError, rf"losses contain NaN or Inf at \w+-set indices \{worst}"


def wrong_count(samples):
    return samples, lambda m, b: causal_lm_losses(m, b)[:1], ValueError, "returned 1 losses for a batch of 4"


def failing_loss(samples):
    def loss_fn(model, batch):
        raise KeyError("pixel_values")

    return samples, loss_fn, KeyError, "pixel_values"


@pytest.mark.parametrize("entry", list(LM_ENTRY_POINTS))
@pytest.mark.parametrize("case", [no_target_tokens, nan_losses, wrong_count, failing_loss], ids=lambda c: c.__name__)
def test_bad_sequences_and_losses_name_the_samples(entry, case):
    torch.manual_seed(0)
    model = TinyLM()
    samples, loss_fn, error, pattern = case(lm_samples())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=pattern) as info:
        LM_ENTRY_POINTS[entry](model, samples, loss_fn)
    if case is failing_loss and hasattr(info.value, "add_note"):  # the user's own error, and where it happened
        assert any(re.search(r"-set indices \[\d+, \d+, \d+, \d+\]", note) for note in info.value.__notes__)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("call,error,pattern", [
    (lambda m, d: influence_scores(m, d, damping="0.01"), TypeError, "damping must be a finite number"),
    (lambda m, d: influence_scores(m, d, damping=float("nan")), TypeError, "damping must be a finite number"),
    (lambda m, d: influence_scores(m, d, batch_size=2.0), TypeError, "batch_size must be an integer"),
    (lambda m, d: influence_scores(m, d, memory_budget=-1), ValueError, "memory_budget must be an integer >= 0"),
    (lambda m, d: influence_scores(m, d, progress="yes"), TypeError, "progress must be True or False"),
    (lambda m, d: influence_scores(m, d, dtype="float64"), TypeError, "dtype must be a torch.dtype"),
    (lambda m, d: unlearn(m, d, epochs=2.5), TypeError, "epochs must be an integer"),
    (lambda m, d: unlearn(m, d, lr="0.1"), TypeError, "lr must be a finite number"),
    (lambda m, d: unlearn(m, d, freeze_batchnorm="no"), TypeError, "freeze_batchnorm must be True or False"),
    (lambda m, d: unlearn(m, d, refresh="always"), ValueError, "refresh must be one of"),
    (lambda m, d: unlearn(m, d, backend="gpu"), ValueError, "backend must be one of"),
    (lambda m, d: unlearn(m, d, method=3), ValueError, "unknown method 3"),
    (lambda m, d: unlearn(m, d, config={"epochs": 1}), TypeError, "config must be an UnlearnConfig"),
    (lambda m, d: per_sample_grad_norms(m, None, d, route="fast"), ValueError, "route must be one of"),
    (lambda m, d: per_sample_grad_norms(m, None, d, per_layer=1), TypeError, "per_layer must be True or False"),
    (lambda m, d: influence_weights(torch.randn(5), top_fraction="0.1"), TypeError, "top_fraction must be a finite"),
    (lambda m, d: influence_weights(torch.randn(5), clip_quantile=1.5), ValueError, r"clip_quantile must be in \[0, 1\]"),
])
def test_arguments_of_the_wrong_type_or_range(call, error, pattern):
    model, x, y = model_and_data()
    with pytest.raises(error, match=pattern):
        call(model, (x, y))


def test_config_type_checks():
    with pytest.raises(TypeError, match="UnlearnConfig: batch_size must be an integer"):
        UnlearnConfig(batch_size=True)
    with pytest.raises(ValueError, match=r"UnlearnConfig: momentum must be in \[0, 1\)"):
        UnlearnConfig(momentum=1.0)


def test_a_module_of_another_model_is_named():
    model, x, y = model_and_data()
    other = SmallNet(4, 6, 3)
    with pytest.raises(ValueError, match="is not a submodule of the model"):
        influence_scores(model, (x, y), targets=[other.fc])
    with pytest.raises(ValueError, match="is not a submodule of the model"):
        influence_scores(model, (x, y), head=other.fc)
    with pytest.raises(ValueError, match="is not a parameter of the model"):
        per_sample_grad_norms(model, None, (x, y), params=[other.fc.weight])
