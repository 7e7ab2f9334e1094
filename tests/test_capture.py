"""The capture engine's guards: batch axes read from shapes, parameters used outside the layers the
rules understand, and layers it cannot take, each an error naming the module."""

import pytest
import torch
from oracle import influence, one, per_sample_grads
from torch import nn
from torch.nn import functional as F

from imu_fast import influence_scores, per_sample_grad_norms
from imu_fast.capture import select_targets


def data(n=6, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


class SharedBias(nn.Module):
    """A layer whose output has a leading size of 1 (a learned offset shared by every sample)."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Linear(1, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x + self.offset(torch.ones(1, 1, dtype=x.dtype)))


def test_an_output_shared_by_the_batch_gets_per_sample_gradients():
    torch.manual_seed(0)
    model = SharedBias().double()
    x, y = data()
    params = [model.offset.weight, model.offset.bias]
    ref = influence(per_sample_grads(model, [one(s) for s in zip(x, y)], params))
    got = influence_scores(model, (x, y), targets=[model.offset], batch_size=4)
    assert torch.allclose(got.scores, ref, rtol=1e-10, atol=1e-12)


class Unbatched(nn.Module):
    """Position embeddings looked up without any batch axis: (T, d), broadcast by the addition."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(10, 4)
        self.pos = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, ids):
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.fc(h.mean(1))


def test_an_output_without_a_batch_axis_is_refused_by_name():
    torch.manual_seed(0)
    model = Unbatched().double()
    ids, y = torch.randint(0, 10, (4, 7)), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match=r"layer Embedding 'pos' produced an output of shape \(7, 4\) in a batch of 4"):
        influence_scores(model, (ids, y), targets=[model.pos])


class Functional(nn.Module):
    """fc.weight is also used directly, outside its module."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.fc(x) + F.linear(x, self.fc.weight))


class ScaledLinear(nn.Linear):
    """A subclass whose forward is not x W^T + b."""

    def forward(self, x):
        return F.linear(x, 2.0 * self.weight, self.bias)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = ScaledLinear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


@pytest.mark.parametrize("build", [Functional, Scaled])
def test_a_parameter_used_outside_its_layer_is_caught(build):
    torch.manual_seed(0)
    model = build().double()
    x, y = data()
    with pytest.raises(RuntimeError, match="'fc.weight' .* do not add up to its batch gradient"):
        influence_scores(model, (x, y), targets=["fc.weight"])
    with pytest.raises(RuntimeError, match="do not add up"):
        per_sample_grad_norms(model, None, (x, y), params=["fc.weight"])
    influence_scores(model, (x, y), targets=["out.weight"])  # the other layer is fine


def test_layers_without_rules_and_mha_extras_are_named():
    mha = nn.MultiheadAttention(4, 2, add_bias_kv=True, batch_first=True)
    with pytest.raises(NotImplementedError, match="'bias_k' is used by MultiheadAttention .* no per-sample rule"):
        select_targets(mha, ["bias_k"])
    with pytest.raises(NotImplementedError, match="'bias_k'"):
        select_targets(mha, None)  # every trainable parameter: bias_k and bias_v included
    assert set(select_targets(mha, [mha]).params) == {"in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                      "out_proj.bias"}
    prelu = nn.Sequential(nn.Linear(3, 3), nn.PReLU())
    with pytest.raises(NotImplementedError, match=r"PReLU \(1\).*Supported layers: .*MultiheadAttention"):
        select_targets(prelu, None)


def test_mha_with_bias_kv_and_zero_attention_is_exact_for_its_projections():
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = x.reshape(x.shape[0], 2, 4)
            out, _ = self.attn(h, h, h, need_weights=False)
            return self.fc(out.mean(1))

    model = Model().double().eval()
    x, y = torch.randn(5, 8, dtype=torch.float64), torch.randint(0, 3, (5,))
    names = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight"]
    named = dict(model.named_parameters())
    ref = influence(per_sample_grads(model, [one(s) for s in zip(x, y)], [named[n] for n in names]))
    got = influence_scores(model, (x, y), targets=names, batch_size=2)
    assert torch.allclose(got.scores, ref, rtol=1e-10, atol=1e-13)
    assert "forward" not in vars(model.attn)  # the capture forward is gone again


class OddRMSNorm(nn.Module):
    """Matched by class name, but normalises as x / (rms(x) + eps), not x / sqrt(mean(x^2) + eps)."""

    def __init__(self, width, eps=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return self.weight * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)


def test_a_norm_matched_by_name_is_checked_against_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), OddRMSNorm(5), nn.Linear(5, 3)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    x, y = data()
    with pytest.raises(RuntimeError, match="'1.weight' .* do not add up"):
        per_sample_grad_norms(model, None, (x, y), params=["1.weight"])
