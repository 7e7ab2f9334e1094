"""Saved, fingerprinted stages: influence results, Fisher diagonals, weights (any kind), reused only
by the same model, forget set and settings."""

import json

import pytest
import torch
from conftest import SmallNet, warmed
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

import imu_fast
import imu_fast.influence.api as influence_api
from imu_fast import StageMismatchError, influence_scores, influence_weights, load_stage, save_stage
from imu_fast.forget_set import as_forget_set
from imu_fast.stages import forget_fingerprint, model_fingerprint


def task(seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    return warmed(SmallNet(5, 8, 3).double(), x).eval(), x, y


def test_influence_is_saved_then_reloaded_without_recomputing(tmp_path, monkeypatch):
    model, x, y = task()
    first = influence_scores(model, (x, y), stage=tmp_path)
    header = json.loads((tmp_path / "influence.json").read_text())
    assert header["settings"]["damping"] == 0.01 and header["settings"]["head"] == "auto"
    assert header["fingerprints"]["forget"]["n"] == 30 and "fc.weight" in header["fingerprints"]["model"]["tensors"]
    saved = load_file(tmp_path / header["tensor_file"])  # plain safetensors, readable by anyone
    assert torch.equal(saved["scores"], first.scores)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the saved stage was not reused")

    monkeypatch.setattr(influence_api, "head_influence_scores", no_recompute)
    again = influence_scores(model, (x, y), stage=tmp_path)
    for part in ("scores", "indices", "fisher", "mean_grad"):
        assert torch.equal(getattr(again, part), getattr(first, part)), part
    assert again.head == first.head == "fc" and again.damping == 0.01


def test_a_layer_route_stage_keeps_every_parameter(tmp_path):
    model, x, y = task()
    first = influence_scores(model, (x, y), targets=["body.0.weight", "fc.weight"], stage=tmp_path)
    again = influence_scores(model, (x, y), targets=["body.0.weight", "fc.weight"], stage=tmp_path)
    assert set(again.fisher) == {"body.0.weight", "fc.weight"}
    assert all(torch.equal(again.fisher[k], first.fisher[k]) for k in first.fisher)
    with pytest.raises(StageMismatchError, match=r"targets: \['body.0.weight', 'fc.weight'\] saved, \['fc.weight'\] now"):
        influence_scores(model, (x, y), targets=["fc.weight"], stage=tmp_path)


def test_a_mismatch_refuses_reuse_naming_what_differs(tmp_path):
    model, x, y = task()
    influence_scores(model, (x, y), stage=tmp_path)
    with pytest.raises(StageMismatchError, match="damping: 0.01 saved, 0.1 now") as exc:
        influence_scores(model, (x, y), damping=0.1, stage=tmp_path)
    assert exc.value.differences == ["damping: 0.01 saved, 0.1 now"]
    with pytest.raises(StageMismatchError, match="forget set: 30 samples saved, 29 now"):
        influence_scores(model, (x[:29], y[:29]), stage=tmp_path)
    other = x.clone()
    other[7, 0] += 1
    with pytest.raises(StageMismatchError, match="same indices but different sample contents"):
        influence_scores(model, (other, y), stage=tmp_path)
    with torch.no_grad():
        model.body[1].running_mean.add_(1)
    with pytest.raises(StageMismatchError, match=r"model: changed: \['body.1.running_mean'\] \(1 tensors\)"):
        influence_scores(model, (x, y), stage=tmp_path)


def test_fisher_diagonal_stage(tmp_path):
    model, x, y = task()
    first = imu_fast.fisher_diagonal(model, None, (x, y), params=["fc.weight"], stage=tmp_path)
    again = imu_fast.fisher_diagonal(model, None, (x, y), params=["fc.weight"], stage=tmp_path)
    assert torch.equal(again["fc.weight"], first["fc.weight"])
    with pytest.raises(StageMismatchError, match="params"):
        imu_fast.fisher_diagonal(model, None, (x, y), params=["fc.bias"], stage=tmp_path)


def test_any_kind_of_stage_weights_and_sketches(tmp_path):
    model, x, y = task()
    scores = influence_scores(model, (x, y)).scores
    weights = influence_weights(scores, top_fraction=0.5)
    settings = {"top_fraction": 0.5, "clip_quantile": 0.93}
    save_stage(tmp_path, "weights", {"weights": weights}, settings=settings, model=model, forget=(x, y),
               info={"note": "kept, not compared"})
    stage = load_stage(tmp_path, "weights", settings=settings, model=model, forget=(x, y))
    assert torch.equal(stage.tensors["weights"], weights) and stage.info == {"note": "kept, not compared"}
    with pytest.raises(StageMismatchError, match="top_fraction: 0.5 saved, 0.2 now"):
        load_stage(tmp_path, "weights", settings={**settings, "top_fraction": 0.2}, model=model, forget=(x, y))
    save_stage(tmp_path, "sketch", {"projected": torch.randn(30, 4)}, settings={"k": 4, "seed": 0})
    assert load_stage(tmp_path, "sketch", settings={"k": 4, "seed": 0}).tensors["projected"].shape == (30, 4)
    with pytest.raises(FileNotFoundError, match="no saved stage 'fisher'"):
        load_stage(tmp_path, "fisher", settings={})
    with pytest.raises(TypeError, match="stage settings must be JSON values"):
        save_stage(tmp_path, "weights", {"w": weights}, settings={"fn": print})


def test_a_stage_written_again_replaces_the_old_one(tmp_path):
    save_stage(tmp_path, "weights", {"w": torch.ones(3)}, settings={"v": 1})
    save_stage(tmp_path, "weights", {"w": torch.zeros(3)}, settings={"v": 2})
    assert len(list(tmp_path.glob("weights-*.safetensors"))) == 1
    assert torch.equal(load_stage(tmp_path, "weights", settings={"v": 2}).tensors["w"], torch.zeros(3))


def test_the_forget_fingerprint_does_not_depend_on_batching_or_form():
    _, x, y = task()
    columns = forget_fingerprint(as_forget_set((x, y), batch_size=4))
    loader = forget_fingerprint(as_forget_set(DataLoader(TensorDataset(x, y), batch_size=7)))
    assert columns == loader
    shuffled = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)  # shuffling is not the loader's order
    assert forget_fingerprint(as_forget_set(shuffled)) == columns
    assert forget_fingerprint(as_forget_set((x[:-1], y[:-1])))["n"] == 29


def test_model_fingerprint_names_each_tensor():
    model, _, _ = task()
    prints = model_fingerprint(model)
    assert set(prints["tensors"]) == set(model.state_dict())
    assert model_fingerprint(model) == prints
    with torch.no_grad():
        model.fc.weight[0, 0] += 1e-12
    changed = model_fingerprint(model)
    assert [k for k in prints["tensors"] if prints["tensors"][k] != changed["tensors"][k]] == ["fc.weight"]
