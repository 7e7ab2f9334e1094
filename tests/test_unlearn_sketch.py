"""IMU with influence weights from sketch space: identity projections reproduce diagonal IMU, a
full sketch Fisher changes the weights, the dynamic refresh works, misuse is refused by name."""

import pytest
import torch
from test_unlearn import snapshot, task

from imu_fast import SketchConfig, influence_scores, unlearn

EXACT = SketchConfig(dim=64 * 64, other_dim=64, fisher="diagonal")  # wider than the head: identity factors


def test_exact_sketches_give_the_diagonal_imu_run():
    model, x, y = task(seed=1)
    start = snapshot(model)
    torch.manual_seed(0)  # the same dropout masks in both runs
    plain = unlearn(model, (x, y), top_fraction=0.5, epochs=2, lr=0.05)
    after_plain = snapshot(model)
    model.load_state_dict(start)
    torch.manual_seed(0)
    sketched = unlearn(model, (x, y), top_fraction=0.5, epochs=2, lr=0.05, sketch=EXACT)
    assert torch.allclose(sketched.scores.double(), plain.scores.double(), rtol=1e-4, atol=1e-7)
    assert torch.equal(sketched.weights > 0, plain.weights > 0)
    assert all(torch.allclose(v, after_plain[k], atol=1e-5) for k, v in model.state_dict().items())
    assert sketched.config["sketch"]["fisher"] == "diagonal"


def test_a_full_sketch_fisher_weights_by_its_own_scores():
    model, x, y = task(seed=2)
    config = SketchConfig(dim=16, other_dim=4, fisher="full", blocks="all")
    expected = influence_scores(model, (x, y), sketch=config).scores
    report = unlearn(model, (x, y), top_fraction=0.5, epochs=1, lr=0.05, sketch=config)
    assert torch.allclose(report.scores, expected)


def test_the_dynamic_refresh_scores_each_batch_in_sketch_space():
    model, x, y = task(seed=3)
    before = snapshot(model)
    report = unlearn(model, (x, y), refresh="batch", epochs=1, lr=0.05, batch_size=20,
                     sketch=SketchConfig(dim=16, other_dim=4))
    assert report.influence_seconds > 0 and not torch.equal(before["fc.weight"], model.state_dict()["fc.weight"])


def test_sketch_is_refused_where_no_influence_is_computed():
    model, x, y = task()
    with pytest.raises(ValueError, match="computes none"):
        unlearn(model, (x, y), method="ga", sketch=SketchConfig())
    with pytest.raises(ValueError, match="computes none"):
        unlearn(model, (x, y), method="imu-uniform", sketch=SketchConfig())
    with pytest.raises(TypeError, match="sketch must be an imu_fast.SketchConfig"):
        unlearn(model, (x, y), sketch={"dim": 16})


def test_sketch_inside_a_process_group_is_refused_by_name(monkeypatch):
    import imu_fast.distributed as distributed

    model, x, y = task()
    monkeypatch.setattr(distributed, "active", lambda: True)
    with pytest.raises(ValueError, match="process group is not supported yet"):
        unlearn(model, (x, y), sketch=SketchConfig())
    with pytest.raises(ValueError, match="not sharded yet"):
        influence_scores(model, (x, y), sketch=SketchConfig())
