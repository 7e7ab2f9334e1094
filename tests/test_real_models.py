"""Every statistic against the float64 batch-of-one oracle on models built from real architectures'
configs: position embeddings called without a batch axis, tied embeddings, nn.MultiheadAttention,
PEFT LoRA wrappers, pooled sequence-classification heads, padded dict batches."""

import pytest
import torch
from conftest import mismatch, rel_err
from model_zoo import (bert_classifier, cross_attention_classifier, encoder_classifier, gpt2_lm, llama_classifier,
                       lora_llama, tied_llama_lm, token_sequences, vit_classifier)
from oracle import influence, one, per_sample_grads

from imu_fast import fisher_diagonal, influence_scores, per_sample_grad_norms
from imu_fast.lm import causal_lm_losses

TOL = 1e-9


def lm_loss(model, batch):
    return causal_lm_losses(model, batch)[0]


def check_all(model, samples, targets, loss_fn=None, oracle_loss=None, batch_size=4):
    """Influence, per-sample norms and the Fisher diagonal of ``targets`` against the oracle."""
    named = dict(model.named_parameters(remove_duplicate=False))
    params = [named[t] for t in targets]
    kwargs = {} if oracle_loss is None else {"loss": oracle_loss}
    g = per_sample_grads(model, [one(s) for s in samples], params, **kwargs)
    got = influence_scores(model, samples, targets=targets, loss_fn=loss_fn, batch_size=batch_size)
    ref = influence(g)
    assert rel_err(got.scores, ref) < TOL, mismatch(got.scores, ref, TOL)
    assert torch.equal(got.indices, torch.arange(len(samples)))
    norms = per_sample_grad_norms(model, loss_fn, samples, params=targets, batch_size=batch_size)
    assert rel_err(norms, g.norm(dim=1)) < TOL
    fisher = fisher_diagonal(model, loss_fn, samples, params=targets, batch_size=batch_size)
    flat = torch.cat([fisher[t].reshape(-1) for t in targets])
    assert rel_err(flat, (g * g).mean(0)) < TOL
    return got


def test_gpt2_position_embeddings_called_with_a_shared_batch_axis():
    model = gpt2_lm()
    samples = token_sequences()
    check_all(model, samples, ["transformer.wpe.weight", "transformer.h.1.attn.c_attn.weight"],
              causal_lm_losses, lm_loss)


@pytest.mark.parametrize("name", ["transformer.wte.weight", "lm_head.weight"])
def test_gpt2_tied_embedding_is_scored_as_one_parameter_by_either_name(name):
    model = gpt2_lm()
    assert model.lm_head.weight is model.transformer.wte.weight
    got = check_all(model, token_sequences(), [name], causal_lm_losses, lm_loss)
    assert list(got.fisher) == [name]


def test_tied_llama_embedding_and_attention():
    model = tied_llama_lm()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    check_all(model, token_sequences(seed=1), ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                               "model.norm.weight"], causal_lm_losses, lm_loss)


def test_bert_classifier_embeddings_and_attention_on_padded_dict_batches():
    model = bert_classifier()
    check_all(model, token_sequences(classes=3), ["bert.embeddings.position_embeddings.weight",
                                                  "bert.embeddings.token_type_embeddings.weight",
                                                  "bert.encoder.layer.1.attention.self.query.weight"])


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_multihead_attention(batch_first):
    model = encoder_classifier(batch_first=batch_first)
    targets = [n for n, _ in model.named_parameters() if "self_attn" in n]
    assert any("in_proj_weight" in t for t in targets) and any("out_proj.weight" in t for t in targets)
    check_all(model, token_sequences(classes=3, seed=2), targets)


@pytest.mark.parametrize("same_kv", [False, True])
def test_cross_attention_with_other_key_and_value_widths(same_kv):
    model = cross_attention_classifier(same_kv=same_kv)
    targets = [f"attn.{n}" for n, _ in model.attn.named_parameters()]
    check_all(model, token_sequences(classes=3, seed=3), targets)


def test_peft_lora_adapters_and_frozen_base_layer():
    model = lora_llama()
    adapters = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapters and all("lora_" in n for n in adapters)
    base = [n for n in dict(model.named_parameters()) if "layers.1.self_attn.v_proj.base_layer.weight" in n]
    check_all(model, token_sequences(seed=4), adapters + base, causal_lm_losses, lm_loss)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())


def test_vit_patch_convolution_attention_and_norm():
    model = vit_classifier()
    torch.manual_seed(0)
    samples = list(zip(torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,))))
    check_all(model, samples, ["vit.embeddings.patch_embeddings.projection.weight",
                               "vit.layers.0.attention.q_proj.weight", "vit.layernorm.weight"], batch_size=2)


@pytest.mark.parametrize("build", [bert_classifier, llama_classifier, vit_classifier])
def test_classifier_heads_are_found_and_exact(build):
    """BERT's classifier returns the logits; Llama's score head is pooled at the last non-pad token."""
    model = build()
    if build is vit_classifier:
        torch.manual_seed(1)
        samples = list(zip(torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))))
        head = model.classifier
    else:
        samples = token_sequences(classes=3, seed=5)
        head = model.classifier if build is bert_classifier else model.score
    g = per_sample_grads(model, [one(s) for s in samples], list(head.parameters()))
    found = influence_scores(model, samples, batch_size=4)
    named = influence_scores(model, samples, head=head, batch_size=4)
    ref = influence(g)
    assert found.head == named.head and rel_err(found.scores, ref) < TOL, mismatch(found.scores, ref, TOL)
    assert rel_err(named.scores, ref) < TOL


def test_head_whose_logits_are_not_its_rows_points_to_targets():
    model = gpt2_lm()
    with pytest.raises(ValueError, match="targets="):
        influence_scores(model, token_sequences(), head=model.lm_head)  # token logits, no class labels


def test_attention_targets_name_vit_projections_too():
    from imu_fast.lm import attention_targets

    assert attention_targets(vit_classifier(), [0]) == [f"vit.layers.0.attention.{p}_proj.weight" for p in "qkvo"]
