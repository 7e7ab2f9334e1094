"""Sketches against float64 per-sample autograd: every Kronecker block is P_out^T g_i P_in of the
exact gradient (Linear with token axes, Conv2d, GPT-2 Conv1D, nn.MultiheadAttention, tied and
chunked LM heads), every JL block is the reference projection of it, on every backend; and JL
preserves norms and inner products of exact per-sample gradients as the theory says, at several k."""

import math

import pytest
import torch
from conftest import BACKENDS, SmallCNN, mismatch, rel_err
from model_zoo import (VOCAB, bert_classifier, cross_attention_classifier, encoder_classifier, gpt2_lm, tied_llama_lm,
                       token_sequences, vit_classifier)
from oracle import classification_loss
from sketch_oracle import exact_sketches, grads_by_name
from torch import nn

from imu_fast import SketchConfig, gradient_sketches
from imu_fast.lm import causal_lm_losses

TOL = 1e-9  # float64 throughout (the bar is 1e-6)


def lm_loss(model, batch):
    return causal_lm_losses(model, batch)[0]


class TokenMLP(nn.Module):
    """Linear layers over a token axis (N x T x d), a LayerNorm, mean pooling, a classifier."""

    def __init__(self, d=5, width=19, classes=3):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.norm = nn.LayerNorm(width)
        self.mid = nn.Linear(width, 23)
        self.head = nn.Linear(23, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.mid(self.norm(self.inp(x)))).mean(1))


def token_data(n=7, t=6, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return list(zip(torch.randn(n, t, d, dtype=torch.float64, generator=g), torch.randint(0, classes, (n,), generator=g)))


def check(model, samples, names, config, loss_fn=None, oracle_loss=classification_loss, backends_=BACKENDS,
          batch_size=3):
    grads = grads_by_name(model, samples, names, loss=oracle_loss)
    reference = None
    for backend in backends_:
        got = gradient_sketches(model, loss_fn, samples, params=names, config=config, batch_size=batch_size,
                                backend=backend)
        if reference is None:
            reference = exact_sketches(got, grads)
        assert got.sketches.shape == reference.shape
        assert rel_err(got.sketches, reference) < TOL, f"{backend}: " + mismatch(got.sketches, reference, TOL)
        assert torch.equal(got.indices, torch.arange(len(samples)))
    return got, grads


def kron_blocks_match(sketch_set, grads):
    """Each Kronecker block, checked on its own against P_out^T g_i P_in (the issue's statement)."""
    kron = [b for b in sketch_set.layout.blocks if b.kind == "kronecker"]
    assert kron
    for block in kron:
        p_in, p_out = sketch_set.projection(block.name)
        g = grads[block.name].reshape(len(sketch_set.indices), *block.matrix)
        ref = p_out.T @ g @ p_in
        got = sketch_set.sketches[:, block.start:block.stop].reshape(ref.shape)
        assert rel_err(got, ref) < 1e-6 and rel_err(got, ref) < TOL, block.name


CONFIG = SketchConfig(dim=16, other_dim=6, dtype="float64", seed=3)


def test_linear_layers_with_token_axes_and_a_norm():
    model = TokenMLP().double().eval()
    names = [n for n, _ in model.named_parameters()]
    got, grads = check(model, token_data(), names, CONFIG)
    kinds = {b.name: b.kind for b in got.layout.blocks}
    assert kinds == {"inp.weight": "kronecker", "inp.bias": "jl", "norm.weight": "jl", "norm.bias": "jl",
                     "mid.weight": "kronecker", "mid.bias": "jl", "head.weight": "kronecker", "head.bias": "exact"}
    assert got.layout.by_name["inp.weight"].k_in == 4 and got.layout.by_name["head.weight"].k_out == 3  # 3 rows: kept
    kron_blocks_match(got, grads)


def test_conv2d_through_unfold():
    torch.manual_seed(0)
    model = SmallCNN(4).double().eval()
    samples = list(zip(torch.randn(5, 1, 6, 7, dtype=torch.float64), torch.randint(0, 4, (5,))))
    got, grads = check(model, samples, ["conv.0.weight", "conv.0.bias", "head.weight"], SketchConfig(
        dim=12, factors=(3, 4), other_dim=2, dtype="float64"))
    assert got.layout.by_name["conv.0.weight"].shape == (4, 1, 3, 3)
    kron_blocks_match(got, grads)


def test_gpt2_conv1d_positions_and_the_tied_head():
    model = gpt2_lm()
    names = ["transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.weight", "transformer.wpe.weight",
             "transformer.wte.weight"]
    got, grads = check(model, token_sequences(), names, CONFIG, causal_lm_losses, lm_loss)
    kinds = {b.name: b.kind for b in got.layout.blocks}
    assert kinds["transformer.wpe.weight"] == "jl"  # an embedding alone: JL
    assert kinds["transformer.wte.weight"] == "kronecker"  # tied to lm_head: embedding + outer product
    kron_blocks_match(got, grads)


def test_bert_padded_dict_batches_position_embeddings_and_attention():
    model = bert_classifier()
    names = ["bert.embeddings.position_embeddings.weight", "bert.encoder.layer.1.attention.self.query.weight",
             "bert.encoder.layer.0.output.dense.weight", "classifier.weight"]
    got, grads = check(model, token_sequences(classes=3), names, CONFIG)
    assert got.layout.by_name["bert.embeddings.position_embeddings.weight"].kind == "jl"
    kron_blocks_match(got, grads)


def test_vit_patch_convolution_and_attention():
    model = vit_classifier()
    torch.manual_seed(0)
    samples = list(zip(torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,))))
    names = ["vit.embeddings.patch_embeddings.projection.weight", "vit.layers.0.attention.q_proj.weight",
             "vit.layernorm.weight"]
    got, grads = check(model, samples, names, CONFIG, batch_size=2)
    assert got.layout.by_name["vit.embeddings.patch_embeddings.projection.weight"].kind == "kronecker"
    kron_blocks_match(got, grads)


def test_tied_llama_chunked_head_attention_and_norm(monkeypatch):
    from imu_fast.capture import linear_ce

    monkeypatch.setattr(linear_ce, "BLOCK_ELEMENTS", 64)  # the head term runs over many vocabulary chunks
    model = tied_llama_lm()
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
             "model.norm.weight"]
    got, grads = check(model, token_sequences(seed=1), names, CONFIG, causal_lm_losses, lm_loss)
    kron_blocks_match(got, grads)


def test_untied_lm_head_weight_and_bias(monkeypatch):
    from imu_fast.capture import linear_ce

    monkeypatch.setattr(linear_ce, "BLOCK_ELEMENTS", 64)
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    model.lm_head.bias = nn.Parameter(torch.randn(VOCAB, dtype=torch.float64) * 0.1)
    got, grads = check(model, token_sequences(seed=2), ["lm_head.weight", "lm_head.bias"], CONFIG, causal_lm_losses,
                       lm_loss, backends_=BACKENDS[:2])
    assert [b.kind for b in got.layout.blocks] == ["kronecker", "jl"]


@pytest.mark.parametrize("build", [lambda: encoder_classifier(), lambda: cross_attention_classifier(),
                                   lambda: cross_attention_classifier(same_kv=True)])
def test_multihead_attention_packed_and_separate_projections(build):
    model = build()
    names = [n for n, _ in model.named_parameters() if "attn" in n and "weight" in n]
    got, grads = check(model, token_sequences(classes=3, seed=4), names, CONFIG, backends_=BACKENDS[:2])
    kron_blocks_match(got, grads)


def test_jl_of_everything_is_one_projection_of_the_whole_gradient():
    model = TokenMLP().double().eval()
    names = [n for n, _ in model.named_parameters()]
    got, grads = check(model, token_data(seed=1), names, SketchConfig(kind="jl", dim=40, dtype="float64"))
    assert got.layout.shared and got.dim == 40 and all((b.start, b.stop) == (0, 40) for b in got.layout.blocks)
    small = gradient_sketches(model, None, token_data(seed=1), params=["head.bias"],
                              config=SketchConfig(kind="jl", dim=40, dtype="float64"))
    assert [b.kind for b in small.layout.blocks] == ["exact"]  # fewer parameters than columns: kept exactly


def test_float32_sketches_follow_the_float64_ones():
    model = TokenMLP().double().eval()
    names = [n for n, _ in model.named_parameters()]
    samples = token_data(seed=3)
    ref = gradient_sketches(model, None, samples, params=names, config=CONFIG).sketches
    model32 = TokenMLP().eval()
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    samples32 = [(x.float(), y) for x, y in samples]
    for backend in BACKENDS:
        got = gradient_sketches(model32, None, samples32, params=names, config=CONFIG.replace(dtype="float32"),
                                backend=backend).sketches
        assert got.dtype == torch.float32 and rel_err(got, ref) < 1e-5, backend


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 40)
        self.b = nn.Linear(40, 4)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_jl_preserves_norms_and_inner_products_as_the_theory_says():
    """For a Rademacher R (k x P) with entries +-1/sqrt(k): E ||R g||^2 = ||g||^2 with variance
    (2/k)(||g||^4 - sum g_p^4), and E <R g, R h> = <g, h> with variance
    (1/k)(||g||^2 ||h||^2 + <g, h>^2 - 2 sum g_p^2 h_p^2). Over 12 seeds x 8 samples the
    standardised errors must have mean ~0 and mean square ~1, and shrink like 1/sqrt(k)."""
    torch.manual_seed(5)
    model = Wide().double().eval()
    g = torch.Generator().manual_seed(6)
    samples = list(zip(torch.randn(8, 12, dtype=torch.float64, generator=g), torch.randint(0, 4, (8,), generator=g)))
    names = [n for n, _ in model.named_parameters()]
    exact = torch.cat([v.reshape(8, -1) for v in grads_by_name(model, samples, names).values()], dim=1)  # P = 684
    sq = (exact * exact).sum(1)
    gram = exact @ exact.T
    fourth = (exact * exact) @ (exact * exact).T
    pairs = torch.triu_indices(8, 8, 1)
    worst = {}
    for k in (32, 128, 512):
        z_norm, z_dot, errs = [], [], []
        for seed in range(12):
            s = gradient_sketches(model, None, samples, config=SketchConfig(kind="jl", dim=k, seed=seed,
                                                                           dtype="float64")).sketches
            ratio = (s * s).sum(1) / sq
            sd_norm = torch.sqrt(2.0 / k * (sq * sq - fourth.diagonal())) / sq
            z_norm.append((ratio - 1) / sd_norm)
            errs.append((ratio - 1).abs().max())
            dots = (s @ s.T)[pairs[0], pairs[1]]
            var = (sq[pairs[0]] * sq[pairs[1]] + gram[pairs[0], pairs[1]] ** 2 - 2 * fourth[pairs[0], pairs[1]]) / k
            z_dot.append((dots - gram[pairs[0], pairs[1]]) / var.sqrt())
        for z in (torch.cat(z_norm), torch.cat(z_dot)):
            assert abs(float(z.mean())) < 0.35, (k, float(z.mean()))
            assert 0.5 < float((z * z).mean()) < 1.6, (k, float((z * z).mean()))
        worst[k] = float(torch.stack(errs).median())
    assert worst[512] < worst[128] < worst[32]
    assert worst[512] < 4 * math.sqrt(2 / 512)
