"""``unlearn(..., checkpoint_dir=...)``: atomic checkpoints, and a run killed at any point resumes
to end bit for bit where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SmallNet, warmed

import imu_fast.methods.loop as loop
import resume_cases
from imu_fast import StageMismatchError, unlearn
from imu_fast.stages import files


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def clone_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


class Injected(Exception):
    pass


def interrupt_at(monkeypatch, call: int):
    """Makes the ``call``-th mini-batch step raise (as a crash or a Ctrl-C in a notebook would)."""
    real, calls = loop._step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Injected(f"stopped at step call {call}")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_step", step)


def task():
    torch.manual_seed(0)
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    return warmed(SmallNet(5, 16, 3), x), x, y


RUNS = {
    "imu, weights refreshed each epoch": dict(method="imu", top_fraction=0.5, refresh="epoch"),
    "imu, dynamic per-batch weights": dict(method="imu", refresh="batch"),
    "ga with AdamW": dict(method="ga", optimizer="adamw", lr=1e-3),
    "npo": dict(method="npo"),
    "rl": dict(method="rl"),
}


@pytest.mark.parametrize("name", sorted(RUNS))
@pytest.mark.parametrize("interrupt", [2, 5])  # after the first checkpoint; and in the middle of an epoch
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch, name, interrupt):
    settings = dict(epochs=3, batch_size=8, **RUNS[name])
    model, x, y = task()
    start = clone_state(model)
    torch.manual_seed(5)
    want = unlearn(model, (x, y), **settings)
    wanted = clone_state(model)

    model.load_state_dict(start)
    torch.manual_seed(5)
    interrupt_at(monkeypatch, interrupt)
    with pytest.raises(Injected):
        unlearn(model, (x, y), checkpoint_dir=tmp_path, checkpoint_every=1, **settings)
    assert same_state(clone_state(model), start)  # a failed run puts the weights back
    monkeypatch.undo()
    torch.manual_seed(999)  # whatever the RNG says now, the checkpoint's states take over
    got = unlearn(model, (x, y), checkpoint_dir=tmp_path, checkpoint_every=1, **settings)
    assert got.resumed_from_step is not None and 0 < got.resumed_from_step < want.steps
    assert same_state(clone_state(model), wanted)
    for field in ("epoch_objective", "epoch_forget_loss", "steps", "n_kept", "message"):
        assert getattr(got, field) == getattr(want, field), field
    for field in ("weights", "scores"):
        assert (getattr(got, field) is None) == (getattr(want, field) is None)
        if getattr(want, field) is not None:
            assert torch.equal(getattr(got, field), getattr(want, field))


def test_a_killed_process_resumes_bit_for_bit(tmp_path):
    want_model, want = resume_cases.run()
    child = [sys.executable, str(Path(resume_cases.__file__)), str(tmp_path), "9"]  # 45 samples: 6 batches per epoch
    done = subprocess.run(child, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (tmp_path / "checkpoint.json").is_file()
    got_model, got = resume_cases.run(tmp_path)
    assert got.resumed_from_step == 8  # the checkpoint after batch 2 of epoch 2 (every 2 batches)
    assert same_state(got_model.state_dict(), want_model.state_dict())
    assert got.epoch_objective == want.epoch_objective and got.epoch_forget_loss == want.epoch_forget_loss


def test_a_finished_run_returns_its_result(tmp_path):
    model, x, y = task()
    start = clone_state(model)
    first = unlearn(model, (x, y), method="ga", epochs=2, checkpoint_dir=tmp_path)
    done = clone_state(model)
    model.load_state_dict(start)
    again = unlearn(model, (x, y), method="ga", epochs=2, checkpoint_dir=tmp_path, progress=True)  # bars: same run
    assert same_state(clone_state(model), done)
    assert again.epoch_objective == first.epoch_objective and again.resumed_from_step == first.steps


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path):
    model, x, y = task()
    start = clone_state(model)
    unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    model.load_state_dict(start)
    with pytest.raises(StageMismatchError, match=r"config: .*'lr': 0.01.* saved.*'lr': 0.02"):
        unlearn(model, (x, y), method="ga", epochs=1, lr=0.02, checkpoint_dir=tmp_path)
    with pytest.raises(StageMismatchError, match=r"forget set: 50 samples saved, 40 now"):
        unlearn(model, (x[:40], y[:40]), method="ga", epochs=1, checkpoint_dir=tmp_path)
    y2 = y.clone()
    y2[3] = (y2[3] + 1) % 3
    with pytest.raises(StageMismatchError, match="same indices but different sample contents"):
        unlearn(model, (x, y2), method="ga", epochs=1, checkpoint_dir=tmp_path)
    with torch.no_grad():
        model.fc.bias.add_(1)
    with pytest.raises(StageMismatchError, match=r"model: changed: \['fc.bias'\]"):
        unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(StageMismatchError, match="method: 'ga' saved, 'npo' now"):
        unlearn(model, (x, y), method="npo", epochs=1, checkpoint_dir=tmp_path)


def test_a_write_killed_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, x, y = task()
    unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    before = (tmp_path / "checkpoint.json").read_text()
    real = os.replace

    def crash(src, dst):
        if str(dst).endswith(".json"):  # after the tensor file is in place, before the commit
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_stage_files(tmp_path, "checkpoint", {"a": torch.ones(2)}, {"settings": {}})
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.json").read_text() == before
    header, tensors = files.read_stage_files(tmp_path, "checkpoint")  # still whole and consistent
    assert "a" not in tensors and not list(tmp_path.glob(".*.tmp"))


def test_damaged_checkpoint_files_are_errors_naming_the_file(tmp_path):
    model, x, y = task()
    unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    tensor_file = next(tmp_path.glob("checkpoint-*.safetensors"))
    tensor_file.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{tensor_file.name} is not a readable safetensors file"):
        unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    tensor_file.unlink()
    with pytest.raises(FileNotFoundError, match=f"names the tensor file {tensor_file.name}, which is missing"):
        unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match="checkpoint.json is not a readable stage file"):
        unlearn(model, (x, y), method="ga", epochs=1, checkpoint_dir=tmp_path)


def test_checkpoint_settings_are_validated(tmp_path):
    model, x, y = task()
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        unlearn(model, (x, y), checkpoint_dir=tmp_path, checkpoint_every=0)
    stream = torch.utils.data.DataLoader(IterableSamples(x, y), batch_size=None)
    with pytest.raises(ValueError, match="is a stream: a saved stage needs a map-style dataset"):
        unlearn(model, stream, method="ga", checkpoint_dir=tmp_path)


class IterableSamples(torch.utils.data.IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))
