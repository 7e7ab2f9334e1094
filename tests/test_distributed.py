"""torch.distributed: two gloo processes on the CPU get the one-process results.

Both processes run ``dist_worker.py`` once (every scenario of ``dist_cases``, about ten seconds
together); the tests compare what they saved with the same calls made here, in one process.
Float64 results may differ only by the order of the reductions.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dist_cases as cases
import imu_fast
from conftest import mismatch, rel_err

WORKER = Path(__file__).with_name("dist_worker.py")
TOL = 1e-10
TIMEOUT = 300


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(out / "store"), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the 2-process run hung")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def close(got, want):
    assert got.shape == want.shape and rel_err(got, want) <= TOL, mismatch(got, want, TOL)


def test_influence_both_routes_match_one_process(ranks):
    x, y = cases.data()
    model = cases.model()
    head = imu_fast.influence_scores(model, (x, y))
    layers = imu_fast.influence_scores(model, (x, y), targets=["body.0.weight", "fc.weight"])
    for got in ranks:
        scores, indices, fisher, mean_grad = got["head"]
        assert torch.equal(indices, head.indices)
        close(scores, head.scores)
        close(fisher, head.fisher)
        close(mean_grad, head.mean_grad)
        scores, fisher, mean_grad = got["layers"]
        close(scores, layers.scores)
        for name in layers.fisher:
            close(fisher[name], layers.fisher[name])
            close(mean_grad[name], layers.mean_grad[name])


def test_a_loader_with_a_sampler_is_sharded_by_dataset_index(ranks):
    want = imu_fast.influence_scores(cases.model(), cases.loader())
    for got in ranks:
        close(got["loader"], want.scores)


def test_fisher_diagonal_and_norms_match_one_process(ranks):
    x, y = cases.data()
    model = cases.model()
    fisher = imu_fast.fisher_diagonal(model, None, (x, y))
    norms, per_layer = imu_fast.per_sample_grad_norms(model, None, (x, y), per_layer=True)
    for got in ranks:
        assert set(got["fisher"]) == set(fisher)
        for name in fisher:
            close(got["fisher"][name], fisher[name])
        close(got["norms"][0], norms)
        for name in per_layer:
            close(got["norms"][1][name], per_layer[name])


def test_shard_false_computes_alone(ranks):
    x, y = cases.data()
    for r, got in enumerate(ranks):
        close(got["alone"], imu_fast.influence_scores(cases.model(), (x[r::2], y[r::2])).scores)
        assert "stage= with shard=False inside a process group" in got["alone_stage"]


@pytest.mark.parametrize("name", sorted(cases.UNLEARN))
def test_unlearn_ends_with_the_same_weights_everywhere_and_as_one_process(ranks, name):
    x, y = cases.data()
    model = cases.model()
    report = imu_fast.unlearn(model, (x, y), **cases.UNLEARN[name])
    first, second = (got[f"unlearn/{name}"] for got in ranks)
    for key, value in model.state_dict().items():
        assert torch.equal(first[0][key], second[0][key]), key  # bit-identical across processes
        close(first[0][key], value)
    assert first[1:] == second[1:]  # the same report on every process
    assert first[3] == second[3] == report.steps > 0
    assert first[1] == pytest.approx(report.epoch_objective, rel=1e-9)
    assert first[2] == pytest.approx(report.epoch_forget_loss, rel=1e-9)


def test_checkpoints_under_a_process_group(ranks):
    weights, resumed_from = ranks[0]["checkpointed"]
    assert resumed_from == ranks[0]["unlearn/ga"][3]  # the finished run's checkpoint was reused
    for key, value in ranks[0]["unlearn/ga"][0].items():
        assert torch.equal(weights[key], value), key


def test_stop_criteria_read_the_sharded_forget_set(ranks):
    x, y = cases.data()
    report = imu_fast.unlearn(cases.model(), (x, y), stop=cases.stop_criteria(), **cases.STOPPED_RUN)
    assert report.stopped_by.startswith("forget accuracy") and report.steps > 0
    for got in ranks:
        steps, stopped_by, final = got["stopped"]
        assert (steps, stopped_by) == (report.steps, report.stopped_by)
        assert final["forget_accuracy"] == report.final_forget["forget_accuracy"]


def test_a_bad_sample_seen_by_one_process_stops_both(ranks):
    named = "labels out of range [0, 4) at forget-set indices [30]"
    first, second = ranks[0]["bad_label"], ranks[1]["bad_label"]
    assert first.startswith("PeerFailed") and "rank 1" in first and named in first
    assert second.startswith("ValueError") and named in second
    messages = ranks[0]["bad_label_unlearn"] + ranks[1]["bad_label_unlearn"]
    assert messages.count(named) == 2 and "PeerFailed" in messages


def test_processes_must_agree_on_the_data_and_the_model(ranks):
    for got in ranks:
        assert "the forget set (number of samples" in got["different_sets"] and "rank 1 has (21" in got["different_sets"]
        assert "rank 1's ['fc.bias'] differ from rank 0's" in got["different_models"]


def test_fully_sharded_models_are_refused(ranks):
    for got in ranks:
        for key in ("fsdp_unlearn", "fsdp_influence"):
            assert got[key].startswith("NotImplementedError: FullyShardedDataParallel") and "DistributedDataParallel" in got[key]
