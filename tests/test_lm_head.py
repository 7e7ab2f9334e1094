"""Vocabulary-sized output layers: the chunked linear cross-entropy against the plain one, its
per-sample term against dense per-sample gradients, the LM-head route against the oracle, and no
N x T x V tensor anywhere."""

import pytest
import torch
from conftest import mismatch, rel_err
from model_zoo import VOCAB, gpt2_lm, token_sequences, transformers
from oracle import influence, one, per_sample_grads
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from imu_fast import fisher_diagonal, influence_scores, per_sample_grad_norms
from imu_fast.capture import linear_ce
from imu_fast.capture.linear_ce import head_terms, linear_cross_entropy, log_sum_exp
from imu_fast.lm import causal_lm_losses

TOL = 1e-9


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(linear_ce, "BLOCK_ELEMENTS", 40)  # many vocabulary chunks even for tiny shapes


def head_case(n=3, t=5, d=4, v=23, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, v, (n, t), generator=g)
    y[0, 1] = y[2, 4] = -100
    valid = y != -100
    weights = valid.double() / valid.sum(1, keepdim=True)
    return h, w, b, y, weights


def plain_losses(h, w, b, y, weights):
    z = F.linear(h, w, b)
    ce = F.cross_entropy(z.reshape(-1, w.shape[0]), y.reshape(-1), ignore_index=-100, reduction="none")
    return (ce.reshape(y.shape) * weights).sum(1)


@pytest.mark.parametrize("bias", [True, False])
def test_chunked_cross_entropy_matches_the_plain_one(small_blocks, bias):
    h, w, b, y, weights = head_case(bias=bias)
    got = linear_cross_entropy(h, w, b, y, weights)
    ref = plain_losses(h, w, b, y, weights)
    assert rel_err(got, ref) < 1e-13
    upstream = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    params = [h, w] + ([b] if bias else [])
    for mine, theirs in zip(torch.autograd.grad((got * upstream).sum(), params),
                            torch.autograd.grad((ref * upstream).sum(), params)):
        assert rel_err(mine, theirs) < 1e-12


def test_the_head_term_matches_dense_per_sample_gradients(small_blocks):
    h, w, b, y, weights = head_case()
    n, t, d = h.shape
    lse = log_sum_exp(h.detach().reshape(n * t, d), w.detach(), b.detach()).reshape(n, t)
    terms = head_terms(h.detach(), w, b, lse, y.clamp_min(0), weights)
    z = F.linear(h.detach(), w.detach(), b.detach())
    e = (z.softmax(-1) - F.one_hot(y.clamp_min(0), w.shape[0]).double()) * weights[..., None]
    dense = {"weight": torch.einsum("ntv,ntd->nvd", e, h.detach()), "bias": e.sum(1)}
    m = {"weight": torch.randn(w.shape, dtype=torch.float64), "bias": torch.randn(b.shape, dtype=torch.float64)}
    for name, term in terms.items():
        g = dense[name].reshape(n, -1)
        assert rel_err(term.fisher_sum("torch").reshape(-1), (g * g).sum(0)) < 1e-12, name
        assert rel_err(term.norm_sq("torch"), (g * g).sum(1)) < 1e-12, name
        assert rel_err(term.grad_sum().reshape(-1), g.sum(0)) < 1e-12, name
        assert rel_err(term.dot(m[name]), g @ m[name].reshape(-1)) < 1e-12, name
        assert rel_err(term.dense(slice(1, 3)), g[1:3]) < 1e-12, name
    ids = torch.tensor([3, 0, 17])
    assert rel_err(terms["weight"].rows_for(1, ids), dense["weight"][1][ids]) < 1e-12


def untied_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg).double().eval()


def lm_loss(model, batch):
    return causal_lm_losses(model, batch)[0]


def test_the_lm_head_route_matches_the_oracle(small_blocks):
    model = untied_llama()
    samples = token_sequences(seed=6)
    g = per_sample_grads(model, [one(s) for s in samples], [model.lm_head.weight], loss=lm_loss)
    ref = influence(g)
    head = influence_scores(model, samples, head=model.lm_head, batch_size=4)
    assert rel_err(head.scores, ref) < TOL, mismatch(head.scores, ref, TOL)
    layer = influence_scores(model, samples, targets=["lm_head.weight"], loss_fn=causal_lm_losses, batch_size=4)
    assert rel_err(layer.scores, ref) < TOL
    assert rel_err(head.fisher["lm_head.weight"].reshape(-1), (g * g).mean(0) + 0.01) < TOL
    norms = per_sample_grad_norms(model, causal_lm_losses, samples, params=["lm_head.weight"])
    assert rel_err(norms, g.norm(dim=1)) < TOL
    streamed = influence_scores(model, samples, head=model.lm_head, batch_size=4, memory_budget=0)
    assert rel_err(streamed.scores, head.scores) < 1e-12


def test_a_tied_output_layer_is_referred_to_targets():
    model = gpt2_lm()
    with pytest.raises(ValueError, match="tied to .*transformer.wte.*use targets="):
        influence_scores(model, token_sequences(), head=model.lm_head)


class SoftCapped(nn.Module):
    """A causal LM whose logits are soft-capped after the output layer (as Gemma-2 does)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.lm_head = nn.Linear(6, VOCAB, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None):
        logits = self.lm_head(torch.tanh(self.emb(input_ids)))
        return 5.0 * torch.tanh(logits / 5.0)


def test_logits_changed_after_the_output_layer_use_the_model_s_own_logits():
    torch.manual_seed(0)
    model = SoftCapped().double()
    samples = token_sequences(n=3)
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    logits = model(batch["input_ids"])[:, :-1]
    labels = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="none").reshape(labels.shape)
    ref = (ce * (labels != -100)).sum(1) / (labels != -100).sum(1)
    assert rel_err(causal_lm_losses(model, batch), ref) < 1e-12
    with pytest.raises(ValueError, match="not its output layer's output"):
        influence_scores(model, samples, head=model.lm_head)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_of_the_size_of_the_logits_is_ever_formed(monkeypatch):
    monkeypatch.setattr(linear_ce, "BLOCK_ELEMENTS", 4096)
    torch.manual_seed(0)
    vocab = 6000
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    samples = token_sequences(n=4, t=12, vocab=vocab)
    logits_size = 4 * 12 * vocab
    causal_lm_losses(model, {k: torch.stack([s[k] for s in samples])[:1] for k in samples[0]})  # the one-time check
    for run in (lambda: influence_scores(model, samples, head=model.lm_head, batch_size=4),
                lambda: fisher_diagonal(model, causal_lm_losses, samples, params=["lm_head.weight"], batch_size=4),
                lambda: causal_lm_losses(model, {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
                                         ).sum().backward()):
        with LargestTensor() as spy:
            run()
        weight = model.lm_head.weight.numel()  # the weight-sized results (its Fisher, its gradient) are expected
        assert spy.largest <= max(weight, logits_size // 4), (spy.largest, logits_size)
