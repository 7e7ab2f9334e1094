"""The language-model study's trainer variant (``imu-fast bench lm --trainer``) end to end on a tiny
random Llama with a character-level tokenizer: no download, no SmolLM2 weights."""

import argparse
import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from imu_fast.integrations.theta import default_layers  # noqa: E402
from imu_fast.studies import lm, lm_trainer  # noqa: E402


def test_recipe_is_the_authors():
    settings = lm_trainer.full_settings()
    assert settings.runner == "trainer" and settings.layer_rule == "authors" and settings.unlearn_epochs == 10
    by_key = {m.key: m for m in settings.methods}
    assert set(by_key) == {"ga", "npo", "imu-batch", "imu-batch-a0"}
    assert by_key["imu-batch"].settings == {"refresh": "batch", "alpha": 0.02}
    for key in ("ga", "npo", "imu-batch"):  # these sweeps start at the authors' learning rate
        assert min(by_key[key].lrs) == lm_trainer.AUTHORS_LR
    assert lm_trainer.quick_settings().runner == "trainer"


def test_tiny_trainer_study_end_to_end(tmp_path):
    parser = argparse.ArgumentParser()
    lm.add_arguments(parser)
    out = tmp_path / "lm"
    args = parser.parse_args(["--trainer", "--tiny", "--no-cache", "--no-progress", "--out", str(out)])
    torch.manual_seed(0)
    assert lm.run(args) == 0
    results = json.loads((out / "runs.json").read_text())
    settings = lm_trainer.tiny_settings()
    assert results["settings"]["runner"] == "trainer"
    assert {(r["method"], r["lr"]) for r in results["runs"]} == {(m.key, lr) for m in settings.methods for lr in m.lrs}
    assert results["model"]["imu_layers"] == default_layers(results["model"]["n_layers"])
    tuned = next(r for r in results["reference"] if r["name"] == "fine-tuned")
    for run in results["runs"]:
        assert run["update_seconds"] > 0 and run["epochs_run"] == settings.unlearn_epochs
        assert run["forget_loss"] is None or run["forget_loss"] > tuned["forget_loss"]  # every method ascended
        assert (run["influence_seconds"] > 0) == run["method"].startswith("imu")
    summary = (out / "summary.md").read_text()
    assert "imu-fast bench lm --trainer --tiny" in summary and "Hugging Face Trainer" in summary
    assert "- IMU (batch, α=0.02) vs GA" in summary
