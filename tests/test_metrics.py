"""Evaluation metrics: UA / RA / TA, the MIA-Efficacy recipe pinned detail by detail, Avg. Gap."""

import numpy as np
import pytest
import sklearn.svm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from imu_fast import accuracy_percent, avg_gap, evaluate, mia_efficacy
from imu_fast.models import accuracy

C = 4
REAL_SVC = sklearn.svm.SVC


class Echo(nn.Module):
    """logits = x, so each sample's softmax is set by hand; records the mode of every forward."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x * self.scale


def confident(y, margin=12.0):
    """Logits that put probability ~1 on label ``y`` (slightly different per sample)."""
    g = torch.Generator().manual_seed(int(y.sum()) + len(y))
    return margin * nn.functional.one_hot(y, C).float() + 0.5 * torch.rand(len(y), C, generator=g)


def unconfident(y, seed):
    """Nearly flat logits: true-label probability around 1/C."""
    return 0.3 * torch.rand(len(y), C, generator=torch.Generator().manual_seed(seed))


def labels(n, seed):
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def true_prob(x, y):
    return torch.softmax(x, dim=1)[torch.arange(len(y)), y].double().numpy()


@pytest.fixture
def sets():
    """Retain: 10 confident members then 20 unconfident samples; test and forget: unconfident."""
    yr, yt, yf = labels(30, 1), labels(10, 2), labels(8, 3)
    xr = torch.cat([confident(yr[:10]), unconfident(yr[10:], 4)])
    return (unconfident(yf, 5), yf), (xr, yr), (unconfident(yt, 6), yt)


@pytest.fixture
def spy(monkeypatch):
    """Replaces sklearn.svm.SVC by a subclass that records its arguments (and still classifies)."""
    calls = []

    class SpySVC(REAL_SVC):
        def fit(self, X, y, sample_weight=None):
            calls.append(("fit", self.get_params(), np.array(X, copy=True), np.array(y, copy=True)))
            return super().fit(X, y, sample_weight)

        def predict(self, X):
            calls.append(("predict", np.array(X, copy=True)))
            return super().predict(X)

    monkeypatch.setattr(sklearn.svm, "SVC", SpySVC)
    return calls


@pytest.mark.parametrize("entry", ["mia_efficacy", "evaluate"])
def test_mia_recipe_classifier_features_and_members(sets, spy, entry):
    forget, retain, test = sets
    {"mia_efficacy": mia_efficacy, "evaluate": evaluate}[entry](Echo(), forget, retain, test)
    (_, params, X, y), (_, X_pred) = spy
    assert params == REAL_SVC(C=3, gamma="auto", kernel="rbf").get_params()
    assert params["C"] == 3 and params["gamma"] == "auto" and params["kernel"] == "rbf"
    # One feature: the true-label softmax probability; members = the FIRST |test| = 10 retain samples.
    expected = np.concatenate([true_prob(retain[0][:10], retain[1][:10]), true_prob(*test)])
    assert X.shape == (20, 1)
    np.testing.assert_allclose(X[:, 0], expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(y, [1] * 10 + [0] * 10)
    np.testing.assert_allclose(X_pred[:, 0], true_prob(*forget), rtol=1e-6, atol=0)


def test_mia_constructed_cases(sets):
    forget, retain, test = sets
    # Members confident, non-members and D_f flat: every forget sample looks like a non-member.
    assert mia_efficacy(Echo(), forget, retain, test) == 100.0
    # A forget set the model is confident on looks like members: nothing is called non-member.
    yf = forget[1]
    assert mia_efficacy(Echo(), (confident(yf), yf), retain, test) == 0.0


def test_evaluate_values_and_eval_mode(sets):
    forget, retain, test = sets
    xf, yf = forget
    half = torch.cat([confident(yf[:4]), confident((yf[4:] + 1) % C)])  # first 4 right, last 4 wrong
    model = Echo().train()
    got = evaluate(model, (half, yf), retain, test, batch_size=3)
    assert got["UA"] == 50.0
    assert got["RA"] == pytest.approx(accuracy_percent(model, retain))
    assert got["TA"] == pytest.approx(100.0 * accuracy(model, *test))
    assert got["MIA"] == mia_efficacy(model, (half, yf), retain, test)
    assert set(got) == {"UA", "RA", "TA", "MIA"}
    assert model.modes and not any(model.modes) and model.training  # ran in eval mode, mode restored


def test_batching_and_dataset_forms_agree(sets):
    forget, retain, test = sets
    ref = evaluate(Echo(), forget, retain, test)
    shuffled = DataLoader(TensorDataset(*retain), batch_size=4, shuffle=True)  # its dataset order counts
    assert evaluate(Echo(), TensorDataset(*forget), shuffled, list(zip(*test)), batch_size=2) == ref


def test_avg_gap_hand_computed():
    result = {"UA": 10.0, "RA": 90.0, "TA": 80.0, "MIA": 20.0}
    retrain = {"UA": 12.0, "RA": 95.0, "TA": 79.0, "MIA": 30.0, "extra": 1.0}
    assert avg_gap(result, retrain) == pytest.approx((2 + 5 + 1 + 10) / 4)
    assert avg_gap(retrain, retrain) == 0.0
    assert avg_gap({**result, "UA": np.float32(14.0)}, retrain) == pytest.approx((2 + 5 + 1 + 10) / 4)


@pytest.mark.parametrize("bad,err", [
    ({"UA": 1.0, "RA": 1.0, "TA": 1.0}, KeyError),
    ({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": float("nan")}, ValueError),
    ({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": "7"}, ValueError),
    ({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": True}, ValueError),
])
def test_avg_gap_bad_input(bad, err):
    good = {"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0}
    with pytest.raises(err, match="MIA"):
        avg_gap(bad, good)
    with pytest.raises(err, match="retrain_result"):
        avg_gap(good, bad)


def test_bad_sets(sets):
    forget, retain, test = sets
    with pytest.raises(ValueError, match="at least as many retain samples as test samples"):
        mia_efficacy(Echo(), forget, (retain[0][:5], retain[1][:5]), test)
    with pytest.raises(ValueError, match="at least as many retain"):
        evaluate(Echo(), forget, (retain[0][:5], retain[1][:5]), test)
    empty = (torch.zeros(0, C), torch.zeros(0, dtype=torch.long))
    for args, what in (((empty, retain, test), "forget"), ((forget, empty, test), "retain"),
                       ((forget, retain, empty), "test")):
        with pytest.raises(ValueError, match=f"the {what} set is empty"):
            mia_efficacy(Echo(), *args)
        with pytest.raises(ValueError, match=f"the {what} set is empty"):
            evaluate(Echo(), *args)
    with pytest.raises(ValueError, match=r"labels out of range \[0, 4\) at test-set indices"):
        evaluate(Echo(), forget, retain, (test[0], test[1] + C))
    with pytest.raises(TypeError, match="integer class indices"):
        accuracy_percent(Echo(), (test[0], test[1].float()))
    with pytest.raises(TypeError, match="the forget set"):
        evaluate(Echo(), "forget.pt", retain, test)
