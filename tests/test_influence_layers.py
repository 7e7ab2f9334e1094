"""influence_scores(..., targets=...) against the batch-of-one autograd oracle."""

import pytest
import torch
from conftest import BACKENDS, SmallNet, mismatch, rel_err, warmed
from torch.nn import functional as F
from torch.utils.data import DataLoader

from imu_fast import influence_scores
from imu_fast.lm import attention_targets, causal_lm_losses

transformers = pytest.importorskip("transformers")


def oracle(model, samples, loss_of_one, params, damping=0.01):
    rows = []
    for sample in samples:
        grads = torch.autograd.grad(loss_of_one(model, sample), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    g = torch.stack(rows)
    fisher = (g * g).mean(0) + damping
    return -(g @ (g.mean(0) / fisher))


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg).double().eval()


def padded_sequences(n=7, t=10, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    lengths[0] = t
    samples = []
    for i in range(n):
        ids = torch.randint(0, vocab, (t,), generator=g)
        mask = (torch.arange(t) < lengths[i]).long()
        labels = ids.masked_fill(mask == 0, -100)
        labels[1] = -100  # an ignored position inside the sequence too
        samples.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return samples


def one_sequence(model, sample):
    n = int(sample["attention_mask"].sum())
    batch = {k: v[None, :n] for k, v in sample.items()}  # unpadded: what the authors' loop sees
    return causal_lm_losses(model, batch)[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_llama_attention_projections_match_oracle(backend):
    model = tiny_llama()
    samples = padded_sequences()
    targets = attention_targets(model, [0, 2])
    assert len(targets) == 8 and all("self_attn" in t for t in targets)
    named = dict(model.named_parameters())
    ref = oracle(model, samples, one_sequence, [named[t] for t in targets])
    got = influence_scores(model, samples, targets=targets, loss_fn=causal_lm_losses, batch_size=3, backend=backend)
    assert rel_err(got.scores, ref) < 1e-7, mismatch(got.scores, ref, 1e-7)
    assert set(got.fisher) == set(targets)


def test_streaming_and_loader_order_give_the_same_scores():
    model = tiny_llama(1)
    samples = padded_sequences(seed=1)
    targets = attention_targets(model, [1])
    cached = influence_scores(model, samples, targets=targets, loss_fn=causal_lm_losses, batch_size=2).scores
    streamed = influence_scores(model, samples, targets=targets, loss_fn=causal_lm_losses, batch_size=2,
                                memory_budget=0).scores
    shuffled = influence_scores(model, DataLoader(samples, batch_size=2, shuffle=True), targets=targets,
                                loss_fn=causal_lm_losses).scores
    assert rel_err(streamed, cached) < 1e-13 and rel_err(shuffled, cached) < 1e-13


def test_gpt2_conv1d_targets_match_oracle():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    samples = padded_sequences(n=5, t=8)
    targets = attention_targets(model, [1])
    assert targets == ["transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.weight"]
    named = dict(model.named_parameters())
    ref = oracle(model, samples, one_sequence, [named[t] for t in targets])
    got = influence_scores(model, samples, targets=targets, loss_fn=causal_lm_losses, batch_size=2)
    assert rel_err(got.scores, ref) < 1e-7, mismatch(got.scores, ref, 1e-7)


def test_head_as_targets_equals_head_path():
    torch.manual_seed(0)
    model = warmed(SmallNet(5, 8, 4).double(), torch.randn(32, 5, dtype=torch.float64))
    x, y = torch.randn(19, 5, dtype=torch.float64), torch.randint(0, 4, (19,))
    head = influence_scores(model, (x, y), batch_size=6)
    layers = influence_scores(model, (x, y), targets=[model.fc], batch_size=6)
    assert rel_err(layers.scores, head.scores) < 1e-12
    whole = torch.cat([layers.fisher["fc.weight"], layers.fisher["fc.bias"][:, None]], 1)
    assert rel_err(whole, head.fisher) < 1e-12


def test_conv_layers_as_targets_match_oracle():
    from test_per_sample import conv_task

    model, x, y = conv_task(n=6)
    params = [model.c1.weight, model.c2.weight]

    def one(model, sample):
        xi, yi = sample
        return F.cross_entropy(model(xi[None]), yi[None])

    ref = oracle(model, list(zip(x, y)), one, params)
    got = influence_scores(model, (x, y), targets=["c1.weight", "c2.weight"], batch_size=4)
    assert rel_err(got.scores, ref) < 1e-7, mismatch(got.scores, ref, 1e-7)


def test_argument_conflicts():
    torch.manual_seed(0)
    model = SmallNet(5, 8, 4)
    data = (torch.randn(4, 5), torch.randint(0, 4, (4,)))
    with pytest.raises(ValueError, match="not both"):
        influence_scores(model, data, head=model.fc, targets=[model.fc])
    with pytest.raises(ValueError, match="pass targets= as well"):
        influence_scores(model, data, loss_fn=lambda m, b: m(b[0]).sum(1))


def test_sequences_without_targets_are_named():
    model = tiny_llama()
    sample = padded_sequences(n=2)
    sample[1]["labels"][:] = -100
    with pytest.raises(ValueError, match=r"no token to predict \(all labels -100\) at forget-set indices \[1\]"):
        influence_scores(model, sample, targets=attention_targets(model, [0]), loss_fn=causal_lm_losses)
