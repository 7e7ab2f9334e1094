"""Bad inputs to the trainer integrations: each is an error that says what to do."""

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch.utils.data import IterableDataset

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from hf_tiny import args, fitted_llama  # noqa: E402
from imu_fast.integrations.data import IndexCollator  # noqa: E402
from imu_fast.integrations.huggingface import IMUTrainer, NPOTrainer, StopCriteria  # noqa: E402
from imu_fast.integrations.objective import Theta  # noqa: E402
from imu_fast.lm import attention_targets, causal_lm_losses  # noqa: E402


def test_importing_the_integrations_needs_no_transformers():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import imu_fast, imu_fast.integrations.huggingface as hf, imu_fast.integrations.open_unlearning as ou\n"
            "assert ou.config_path().is_file()\n"
            "try:\n    hf.IMUTrainer\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "imu-fast[hf]"' in out.stdout
    code = "import imu_fast.integrations.open_unlearning as ou\ntry:\n    ou.IMU\nexcept ImportError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "put its src/ on sys.path" in out.stdout, out.stderr


class Stream(IterableDataset):
    def __iter__(self):
        yield {"input_ids": torch.zeros(4, dtype=torch.long)}


def test_bad_datasets():
    model, data = fitted_llama()
    with pytest.raises(TypeError, match="map-style train_dataset"):
        IMUTrainer(model=model, args=args(), train_dataset=Stream())
    with pytest.raises(ValueError, match="empty"):
        IMUTrainer(model=model, args=args(), train_dataset=[])
    with pytest.raises(ValueError, match="needs a train_dataset"):
        NPOTrainer(model=model, args=args())
    tuples = [(d["input_ids"], d["labels"]) for d in data]
    with pytest.raises(TypeError, match="needs dict samples"):
        IMUTrainer(model=model, args=args(), train_dataset=tuples).train()
    clash = [{**d, "imu_index": 0} for d in data]
    with pytest.raises(ValueError, match="already has a key 'imu_index'"):
        IMUTrainer(model=model, args=args(), train_dataset=clash).train()


def test_bad_settings():
    model, data = fitted_llama()
    for kw, err, msg in [(dict(refresh="sometimes"), ValueError, "refresh must be one of"),
                         (dict(alpha=-1.0), ValueError, "alpha must be >= 0"),
                         (dict(scope="head", weighting="maybe"), ValueError, "weighting must be one of"),
                         (dict(top_fraction=0.5), ValueError, "top_fraction applies to refresh 'once' or 'epoch'"),
                         (dict(influence_batch_size=0), ValueError, "influence_batch_size must be"),
                         (dict(stop="soon"), TypeError, "stop must be a StopCriteria"),
                         (dict(targets=["no.such.weight"]), KeyError, "no parameter named")]:
        with pytest.raises(err, match=msg):
            trainer = IMUTrainer(model=model, args=args(), train_dataset=data, **kw)
            trainer.train()
    with pytest.raises(ValueError, match="give at least one of"):
        StopCriteria()
    with pytest.raises(ValueError, match="forget_accuracy_at_most must be in"):
        StopCriteria(forget_accuracy_at_most=1.5)
    with pytest.raises(ValueError, match="applies to causal LMs and classifiers"):
        IMUTrainer(model=model, args=args(), train_dataset=data, loss_fn=lambda m, b: None,
                   stop=StopCriteria(forget_accuracy_at_most=0.05))
    frozen = [p for n, p in model.named_parameters() if "self_attn" in n]
    for p in frozen:
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="every one of them is frozen"):
        IMUTrainer(model=model, args=args(), train_dataset=data).train()


def test_a_batch_without_indices_is_an_error_not_uniform_weights():
    model, data = fitted_llama()
    trainer = IMUTrainer(model=model, args=args(), train_dataset=data)

    def forgetful(features):  # a user's collator that keeps only the model inputs
        return transformers.default_data_collator([{k: f[k] for k in ("input_ids", "labels")} for f in features])

    trainer.data_collator = forgetful
    with pytest.raises(KeyError, match="carries no forget-set indices under 'imu_index'"):
        trainer.train()
    with pytest.raises(KeyError, match="some samples of a batch carry a forget-set index"):
        IndexCollator(transformers.default_data_collator)([{"imu_index": 0, "x": 1}, {"x": 2}])


def test_nothing_kept_is_an_error_and_bad_data_names_the_samples(monkeypatch):
    model, data = fitted_llama()
    real = Theta.scores

    def positive(self, model, forget):  # sum_i I_i <= 0 always, so positive scores need a stand-in
        result = real(self, model, forget)
        return dataclasses.replace(result, scores=result.scores.abs() + 1.0)

    monkeypatch.setattr(Theta, "scores", positive)
    with pytest.warns(UserWarning, match="no forget sample has a negative influence"), \
            pytest.raises(ValueError, match="nothing to unlearn"):
        IMUTrainer(model=model, args=args(), train_dataset=data, refresh="once").train()
    monkeypatch.undo()
    empty = [dict(d, labels=torch.full_like(d["labels"], -100)) if i == 5 else d for i, d in enumerate(data)]
    with pytest.raises(ValueError, match=r"no token to predict .* at forget-set indices \[5\]"):
        IMUTrainer(model=model, args=args(), train_dataset=empty).train()


def test_a_diverged_run_stops_with_finite_weights():
    model, data = fitted_llama()
    calls = {"n": 0}

    def diverging(model, batch):  # the sequence loss, which turns NaN from the third training batch on
        losses = causal_lm_losses(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] > 2:
                return losses * float("nan")
        return losses

    trainer = IMUTrainer(model=model, args=args(num_train_epochs=5), train_dataset=data, loss_fn=diverging,
                         targets=attention_targets(model, [3]), refresh="once", top_fraction=1.0)
    trainer.train()
    assert "non-finite at step 2" in trainer.stop_reason and trainer.state.global_step == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
