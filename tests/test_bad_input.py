"""Bad input gets a clear error naming what is wrong, and the model is left as it was."""

import pytest
import torch
from conftest import SmallNet
from torch import nn
from torch.utils.data import TensorDataset

from imu_fast import influence_scores, unlearn


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallNet(4, 6, 3)


def data(n=10, classes=3):
    torch.manual_seed(1)
    return torch.randn(n, 4), torch.randint(0, classes, (n,))


def test_empty_forget_set(model):
    with pytest.raises(ValueError, match="forget set is empty"):
        influence_scores(model, (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="forget set is empty"):
        unlearn(model, TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))


def test_mismatched_lengths(model):
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        influence_scores(model, (torch.zeros(5, 4), torch.zeros(4, dtype=torch.long)))


def test_labels_out_of_range_name_the_indices(model):
    x, y = data()
    y[3], y[7] = 3, -1
    with pytest.raises(ValueError, match=r"out of range \[0, 3\) at forget-set indices \[3, 7\]"):
        influence_scores(model, (x, y), batch_size=10)
    y[3] = 0  # indices are positions in the forget set, not in the batch
    with pytest.raises(ValueError, match=r"indices \[7\] \(values \[-1\]\)"):
        influence_scores(model, (x, y), batch_size=4)


def test_float_labels_rejected(model):
    x, y = data()
    with pytest.raises(TypeError, match="integer class indices"):
        influence_scores(model, (x, y.float()))


def test_nan_inputs_name_the_indices(model):
    x, y = data()
    x[6, 1] = float("nan")
    x[8, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"inputs contain NaN or Inf at forget-set indices \[6, 8\]"):
        influence_scores(model, (x, y), batch_size=3)


class SqrtNet(nn.Module):
    """Finite inputs, NaN features for samples whose first input is negative."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.abs() * x[:, :1].sqrt())


def test_nan_logits_name_the_indices():
    x, y = data()
    x[:, 0] = x[:, 0].abs()
    x[4, 0] = -1.0
    model = SqrtNet()
    with pytest.raises(FloatingPointError, match=r"logits contain NaN or Inf at forget-set indices \[4\]"):
        influence_scores(model, (x, y), batch_size=3)


def test_head_that_is_not_linear(model):
    x, y = data()
    with pytest.raises(TypeError, match="must be an nn.Linear"):
        influence_scores(model, (x, y), head=model.body[1])


def test_head_whose_output_is_not_the_logits(model):
    x, y = data()
    with pytest.raises(ValueError, match="did not produce the model's output"):
        influence_scores(model, (x, y), head=model.body[0])


def test_model_without_identifiable_head():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * 2.0

    x, y = data()
    with pytest.raises(ValueError, match="could not identify the classifier head"):
        influence_scores(Scaled(), (x, y))
    with pytest.raises(ValueError, match="no nn.Linear"):
        influence_scores(nn.Sequential(nn.Flatten()), (x, y))


def test_integer_features(model):
    _, y = data()
    with pytest.raises(TypeError, match="integer dtype"):
        influence_scores(model, (torch.randint(0, 255, (10, 4)), y))


def test_model_and_data_on_different_devices(model):
    x, y = data()
    with pytest.raises(ValueError, match="the model is on meta but the forget set's features are on cpu"):
        influence_scores(model.to("meta"), (x, y))
    with pytest.raises(ValueError, match="the model is on cpu but the forget set's features are on meta"):
        influence_scores(SmallNet(4, 6, 3), (x.to("meta"), y))


def test_batches_must_be_pairs(model):
    x, y = data()
    with pytest.raises(TypeError, match="pair"):
        influence_scores(model, TensorDataset(x, y, y))
    with pytest.raises(TypeError, match="pair"):
        influence_scores(model, [1, 2, 3])  # a list of samples that are not (x, y) pairs
    with pytest.raises(TypeError, match="map-style dataset"):
        influence_scores(model, "forget.csv")


@pytest.mark.parametrize("kwargs,err", [({"damping": -1.0}, "damping"), ({"batch_size": 0}, "batch_size"),
                                        ({"backend": "tpu"}, "backend must be one of"),
                                        ({"dtype": torch.int32}, "floating dtype")])
def test_bad_arguments(model, kwargs, err):
    with pytest.raises((ValueError, TypeError), match=err):
        influence_scores(model, data(), **kwargs)


def test_unavailable_backend_explains_why(model):
    with pytest.raises(RuntimeError, match="backend 'cuda' is unavailable"):
        influence_scores(model, data(), backend="cuda")


def test_zero_damping_with_dead_fisher_entries():
    torch.manual_seed(0)
    model = SmallNet(4, 6, 3)
    x, y = data()
    x[:] = 0  # all-zero inputs still give non-zero head inputs through the biases, so zero the head input:
    with torch.no_grad():
        model.body[0].weight.zero_()
        model.body[0].bias.fill_(-1.0)  # ReLU(BN(-1)) can be 0 for every unit
        model.body[1].bias.fill_(-10.0)
    with pytest.raises(FloatingPointError, match="Fisher diagonal of 'fc' is not finite and positive"):
        influence_scores(model, (x, y), damping=0.0)


def test_failed_call_leaves_model_untouched(model):
    x, y = data()
    y[0] = 9
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        unlearn(model, (x, y))
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
