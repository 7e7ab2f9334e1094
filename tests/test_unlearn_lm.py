"""Unlearning a language model: IMU over attention projections, GA and NPO with a sequence loss."""

import pytest
import torch

from imu_fast import unlearn
from imu_fast.lm import attention_targets, causal_lm_losses

transformers = pytest.importorskip("transformers")


def fitted_llama(seed=0):
    """A tiny Llama fitted to 12 short sequences, so unlearning has something to undo."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 30, (12, 8))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        causal_lm_losses(model, {"input_ids": ids}).mean().backward()
        opt.step()
    return model.eval(), [{"input_ids": row} for row in ids]


def forget_loss(model, data):
    with torch.no_grad():
        return causal_lm_losses(model, {"input_ids": torch.stack([d["input_ids"] for d in data])}).mean().item()


@pytest.mark.parametrize("settings", [
    dict(method="imu", top_fraction=1.0, refresh="once"),
    dict(method="imu", top_fraction=1.0, refresh="epoch"),
    dict(method="imu", refresh="batch"),
    dict(method="ga", scope="head"),
    dict(method="npo", scope="head"),
])
def test_forget_loss_rises(settings):
    model, data = fitted_llama()
    targets = attention_targets(model, [1])
    names = set(targets)
    before = {k: v.clone() for k, v in model.named_parameters()}
    loss0 = forget_loss(model, data)
    report = unlearn(model, data, targets=targets, loss_fn=causal_lm_losses, epochs=5, batch_size=4, lr=0.05,
                     **({"alpha": 0.0} if settings["method"] == "imu" else {}), **settings)
    assert report.epochs_run == 5
    assert forget_loss(model, data) > loss0
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= names  # only theta_c (the selected projections) moved


def test_classification_only_methods_refuse_loss_fn():
    model, data = fitted_llama()
    with pytest.raises(ValueError, match="needs \\(x, y\\) classification data"):
        unlearn(model, data, method="rl", loss_fn=causal_lm_losses)
    with pytest.raises(ValueError, match="needs targets="):
        unlearn(model, data, method="imu", loss_fn=causal_lm_losses)
