"""``IMUTrainer`` / ``NPOTrainer`` (Hugging Face Trainer integration) on tiny config-built models."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from hf_tiny import args, fitted_classifier, fitted_llama, lm_loss, stacked  # noqa: E402
from imu_fast import unlearn  # noqa: E402
from imu_fast.integrations.forget_metrics import forget_metrics  # noqa: E402
from imu_fast.integrations.huggingface import IMUTrainer, NPOTrainer, StopCriteria  # noqa: E402
from imu_fast.integrations.theta import default_layers  # noqa: E402
from imu_fast.lm import attention_targets, causal_lm_losses  # noqa: E402


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def changed(model, before):
    return {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}


def test_default_layers_keep_the_authors_relative_depth():
    assert default_layers(32) == [19, 20, 21]  # the authors' layers on a 32-layer model
    assert default_layers(30) == [18, 19, 20]  # SmolLM2-135M
    assert default_layers(16) == [10, 11, 12]
    assert default_layers(4) == [1, 2, 3]
    assert default_layers(3) == [0, 1, 2] and default_layers(1) == [0]


@pytest.mark.parametrize("refresh", ["batch", "once", "epoch"])
def test_causal_lm_defaults_unlearn_through_the_projections(refresh):
    model, data = fitted_llama()
    before, loss0 = snapshot(model), lm_loss(model, data)
    extra = {} if refresh == "batch" else {"top_fraction": 1.0}
    trainer = IMUTrainer(model=model, args=args(), train_dataset=data, refresh=refresh, **extra)
    trainer.train()
    assert lm_loss(model, data) > loss0 + 0.5
    theta = set(attention_targets(model, default_layers(4)))  # q/k/v/o of layers 1-3
    assert changed(model, before) == theta == set(trainer.trained_names)
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    if refresh != "batch":
        assert trainer.objective.weights.shape == (len(data),) and trainer.objective.refreshes == (
            1 if refresh == "once" else 3)


@pytest.mark.parametrize("refresh", ["batch", "once", "epoch"])
def test_same_result_as_unlearn_with_the_same_optimiser(refresh):
    """One batch per epoch (the weighted mean does not depend on the order inside it), SGD as in
    ``imu_fast.unlearn``: the Trainer must end where the package's own loop ends."""
    model, data = fitted_llama()
    reference = copy.deepcopy(model)
    targets = attention_targets(model, [2, 3])
    settings = dict(refresh=refresh, alpha=0.02, **({} if refresh == "batch" else {"top_fraction": 1.0}))
    unlearn(reference, data, method="imu", targets=targets, loss_fn=causal_lm_losses, lr=0.05, epochs=3,
            batch_size=len(data), **settings)
    theta = [p for n, p in model.named_parameters() if n in targets]
    sgd = torch.optim.SGD(theta, lr=0.05, momentum=0.9, weight_decay=5e-4)
    trainer = IMUTrainer(model=model, args=args(per_device_train_batch_size=len(data), lr_scheduler_type="constant",
                                                max_grad_norm=0.0, learning_rate=0.05),
                         train_dataset=data, targets=targets, optimizers=(sgd, None), **settings)
    trainer.train()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_gradient_accumulation_averages_micro_batches():
    """Two micro-batches of 2 with accumulation equal one batch of 4 (uniform weights, SGD)."""
    model, data = fitted_llama(n=4)
    twin = copy.deepcopy(model)
    common = dict(weighting="uniform", scope="all", alpha=0.0)
    for m, kw in ((model, dict(per_device_train_batch_size=4)),
                  (twin, dict(per_device_train_batch_size=2, gradient_accumulation_steps=2))):
        sgd = torch.optim.SGD(m.parameters(), lr=0.1)
        IMUTrainer(model=m, args=args(num_train_epochs=2, lr_scheduler_type="constant", max_grad_norm=0.0, **kw),
                   train_dataset=data, optimizers=(sgd, None), **common).train()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_plain_gradient_ascent_and_bf16():
    model, data = fitted_llama()
    before, loss0 = snapshot(model), lm_loss(model, data)
    IMUTrainer(model=model, args=args(bf16=True, learning_rate=3e-3), train_dataset=data, weighting="uniform",
               scope="all", alpha=0.0).train()
    assert lm_loss(model, data) > loss0 + 0.5
    assert changed(model, before) == set(before)  # every parameter the Trainer trains


def test_sequence_classifier_uses_its_head():
    model, data = fitted_classifier()
    before = snapshot(model)
    with torch.no_grad():
        loss0 = model(**stacked(data)).loss.item()
    for refresh in ("batch", "once"):
        extra = {} if refresh == "batch" else {"top_fraction": 1.0}
        IMUTrainer(model=model, args=args(learning_rate=0.1), train_dataset=data, refresh=refresh, alpha=0.0,
                   **extra).train()
    with torch.no_grad():
        assert model(**stacked(data)).loss.item() > loss0 + 0.3
    assert changed(model, before) == {"score.weight"}  # Llama's classification head has no bias


def test_index_survives_unused_column_removal_and_eval_uses_the_models_loss():
    model, data = fitted_llama()
    texts = [{**s, "text": f"sample {i}"} for i, s in enumerate(data)]  # a column the model does not take
    trainer = IMUTrainer(model=model, args=args(remove_unused_columns=True, num_train_epochs=1), train_dataset=texts,
                         eval_dataset=data[:4])
    trainer.train()
    metrics = trainer.evaluate()
    with torch.no_grad():
        expected = model(**stacked(data[:4])).loss.item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-4)


def test_npo_trainer_matches_unlearn():
    model, data = fitted_llama()
    reference = copy.deepcopy(model)
    unlearn(reference, data, method="npo", loss_fn=causal_lm_losses, lr=0.05, epochs=3, batch_size=len(data))
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    trainer = NPOTrainer(model=model, args=args(per_device_train_batch_size=len(data), lr_scheduler_type="constant",
                                                max_grad_norm=0.0), train_dataset=data, optimizers=(sgd, None))
    trainer.train()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_stop_criteria():
    model, data = fitted_llama()
    trainer = IMUTrainer(model=model, args=args(num_train_epochs=20), train_dataset=data,
                         stop=StopCriteria(max_steps=5))
    trainer.train()
    assert trainer.state.global_step == 5 and "step budget" in trainer.stop_reason
    model, data = fitted_llama()
    trainer = IMUTrainer(model=model, args=args(num_train_epochs=50, learning_rate=3e-3), train_dataset=data,
                         stop=StopCriteria(forget_loss_at_least=1.0, check_every=1))
    trainer.train()
    assert "forget loss" in trainer.stop_reason and trainer.state.global_step < 150
    log = trainer.forget_log
    assert [e["step"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["forget_loss"] >= 1.0 > max(e["forget_loss"] for e in log[:-1])
    assert log[-1]["forget_loss"] == pytest.approx(lm_loss(model, data), rel=1e-4)  # measured on the forget set
    model, data = fitted_llama()
    trainer = IMUTrainer(model=model, args=args(num_train_epochs=50, learning_rate=3e-3), train_dataset=data,
                         stop=StopCriteria(forget_accuracy_at_most=0.10))
    before = forget_metrics(model, trainer._forget_set(), causal_lm_losses)["forget_accuracy"]
    trainer.train()
    assert before > 50.0 and trainer.forget_log[-1]["forget_accuracy"] <= 10.0
    assert all(e["forget_accuracy"] > 10.0 for e in trainer.forget_log[:-1])
    assert "forget accuracy" in trainer.stop_reason and trainer.state.epoch < 50


def test_forget_metrics_match_a_direct_computation():
    from imu_fast.forget_set import as_forget_set

    model, data = fitted_llama()
    batch = stacked(data)
    metrics = forget_metrics(model, as_forget_set(data, batch_size=5), causal_lm_losses)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        exact = (logits.argmax(-1) == batch["labels"][:, 1:]).all(1).float().mean().item()
        assert metrics["forget_loss"] == pytest.approx(causal_lm_losses(model, batch).mean().item(), rel=1e-5)
    assert metrics["forget_accuracy"] == pytest.approx(100 * exact)
    model, data = fitted_classifier()
    batch = stacked(data)
    with torch.no_grad():
        out = model(**batch)
    metrics = forget_metrics(model, as_forget_set(data, batch_size=5), None)
    assert metrics["forget_accuracy"] == pytest.approx(100 * (out.logits.argmax(1) == batch["labels"]).float().mean().item())
    assert metrics["forget_loss"] == pytest.approx(out.loss.item(), rel=1e-5)
