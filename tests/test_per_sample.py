"""per_sample_grad_norms and fisher_diagonal for every supported layer type, against torch.func
per-sample gradients in float64 (vmap over a batch-of-one loss), plus the errors they raise."""

import pytest
import torch
from conftest import BACKENDS, rel_err
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from imu_fast import fisher_diagonal, per_sample_grad_norms
from imu_fast.capture import select_targets



class MyLinear(nn.Linear):
    """A subclass: must be found through the class hierarchy."""


class TokenNet(nn.Module):
    """Embedding (with padding_idx) -> LayerNorm -> Linear over tokens -> in-place ReLU -> RMSNorm -> head."""

    def __init__(self, vocab=13, width=6, hidden=7, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, width, padding_idx=0)
        self.ln = nn.LayerNorm(width)
        self.proj = MyLinear(width, hidden)
        self.act = nn.ReLU(inplace=True)
        self.rms = nn.RMSNorm(hidden)
        self.out = nn.Linear(hidden, classes, bias=False)

    def forward(self, x):
        h = self.rms(self.act(self.proj(self.ln(self.emb(x)))))
        return self.out(h).mean(1)


class ConvNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(3, 5, (2, 3), dilation=(1, 2), bias=False)
        self.fc = nn.Linear(5, classes)

    def forward(self, x):
        h = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.fc(h.mean((2, 3)))


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def func_per_sample_grads(model, x, y):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def token_task(n=5, t=6, seed=0):
    torch.manual_seed(seed)
    model = TokenNet().double()
    x = torch.randint(0, 13, (n, t))
    x[0, -2:] = 0  # padding tokens
    return model, x, torch.randint(0, 3, (n,))


def conv_task(n=4, seed=0):
    torch.manual_seed(seed)
    return ConvNet().double(), torch.randn(n, 2, 9, 11, dtype=torch.float64), torch.randint(0, 4, (n,))


@pytest.mark.parametrize("task", [token_task, conv_task])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("route", ["gram", "tiled"])
def test_norms_match_torch_func(task, backend, route):
    model, x, y = task()
    g = func_per_sample_grads(model, x, y)
    total, per_layer = per_sample_grad_norms(model, ce, (x, y), backend=backend, route=route, per_layer=True)
    for name, grads in g.items():
        assert rel_err(per_layer[name], grads.reshape(len(x), -1).norm(dim=1)) < 1e-12, name
    ref = torch.cat([v.reshape(len(x), -1) for v in g.values()], 1).norm(dim=1)
    assert total.shape == (len(x),) and rel_err(total, ref) < 1e-12


@pytest.mark.parametrize("task", [token_task, conv_task])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fisher_matches_torch_func(task, backend):
    model, x, y = task(n=7)
    g = func_per_sample_grads(model, x, y)
    batches = DataLoader(TensorDataset(x, y), batch_size=3)  # accumulates over batches of different sizes
    fisher = fisher_diagonal(model, ce, batches, backend=backend)
    assert set(fisher) == set(g)
    for name, grads in g.items():
        assert fisher[name].shape == grads.shape[1:]
        assert rel_err(fisher[name], (grads * grads).mean(0)) < 1e-12, name


def test_selected_params_only_and_by_module():
    model, x, y = token_task()
    g = func_per_sample_grads(model, x, y)
    norms = per_sample_grad_norms(model, ce, (x, y), params=["proj.weight", model.out])
    ref = torch.cat([g["proj.weight"].reshape(5, -1), g["out.weight"].reshape(5, -1)], 1).norm(dim=1)
    assert rel_err(norms, ref) < 1e-12


def test_frozen_layers_can_be_selected_and_stay_frozen():
    model, x, y = token_task()
    model.proj.weight.requires_grad_(False)
    g = func_per_sample_grads(model, x, y)
    norms = per_sample_grad_norms(model, ce, (x, y), params=["proj.weight"])
    assert rel_err(norms, g["proj.weight"].reshape(5, -1).norm(dim=1)) < 1e-12
    assert not model.proj.weight.requires_grad


def test_hf_gpt2_conv1d_and_llama_rmsnorm():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=31, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    ids = torch.randint(0, 31, (3, 5))

    def seq_loss(m, batch):
        logits = m(input_ids=batch).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, 31), batch[:, 1:].reshape(-1), reduction="none").view(3, 4).mean(1)

    names = ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias", "transformer.h.0.ln_1.weight"]
    norms, per = per_sample_grad_norms(model, seq_loss, ids, params=names, per_layer=True)
    for name in names:
        p = dict(model.named_parameters())[name]
        ref = torch.stack([torch.autograd.grad(seq_loss(model, ids)[i], p)[0].norm() for i in range(3)])
        assert rel_err(per[name], ref) < 1e-12, name

    lcfg = transformers.LlamaConfig(vocab_size=23, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    llama = transformers.LlamaForCausalLM(lcfg).double().eval()
    name = "model.layers.0.input_layernorm.weight"
    ids = torch.randint(0, 23, (3, 5))

    def lloss(m, batch):
        logits = m(input_ids=batch).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, 23), batch[:, 1:].reshape(-1), reduction="none").view(3, 4).mean(1)

    norms = per_sample_grad_norms(llama, lloss, ids, params=[name])
    p = dict(llama.named_parameters())[name]
    ref = torch.stack([torch.autograd.grad(lloss(llama, ids)[i], p)[0].norm() for i in range(3)])
    assert rel_err(norms, ref) < 1e-12


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.PReLU(), nn.Linear(4, 2))
    with pytest.raises(NotImplementedError, match=r"'1.weight' is used by PReLU .*Supported layers: .*Linear"):
        select_targets(model, None)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(NotImplementedError, match="PReLU"):
        per_sample_grad_norms(model, ce, (x, y))
    assert per_sample_grad_norms(model, ce, (x, y), params=["0.weight", "2.weight"]).shape == (5,)


def test_grouped_conv_is_refused_clearly():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 2, 5, 5)
    model(x)
    with pytest.raises(NotImplementedError, match="groups=2"):
        per_sample_grad_norms(model, ce, (x, torch.tensor([0, 1])), params=["0.weight"])


def test_batchnorm_in_train_mode_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(RuntimeError, match="BatchNorm '1' is in train mode"):
        per_sample_grad_norms(model, ce, (x, y), params=["0.weight"])
    model.eval()
    assert per_sample_grad_norms(model, ce, (x, y), params=["0.weight"]).shape == (5,)


def test_bad_losses_are_refused():
    model, x, y = token_task()
    with pytest.raises(ValueError, match="1-D floating tensor of per-sample losses"):
        per_sample_grad_norms(model, lambda m, b: ce(m, b).mean(), (x, y))
    with pytest.raises(FloatingPointError, match=r"per-sample losses contain NaN or Inf at data-set indices \[1\]"):
        per_sample_grad_norms(model, lambda m, b: ce(m, b) * torch.tensor([1, float("nan"), 1, 1, 1]), (x, y))
    with pytest.raises(KeyError, match="no parameter named 'nope'"):
        per_sample_grad_norms(model, ce, (x, y), params=["nope"])


def test_non_finite_fisher_is_refused_by_influence():
    from imu_fast import influence_scores

    model, x, y = token_task()
    with torch.no_grad():
        model.out.weight.fill_(1e200)
    with pytest.raises(FloatingPointError):
        influence_scores(model, (x, y), targets=["proj.weight"], damping=0.0)
