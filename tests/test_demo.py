"""The ``imu-fast demo`` command end to end, its model cache, and the digits split helpers."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

import imu_fast.demo
from imu_fast.cli import main
from imu_fast.data import forget_retain_split, load_digits_split

ROWS = ("Original", "Retrain", "GA", "IMU", "IMU (uniform weights)")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("imu_cache")


@pytest.fixture(scope="module")
def first_run(cache_dir, tmp_path_factory):
    """One full demo run with an empty cache; its stdout and JSON results are shared by the tests."""
    out = tmp_path_factory.mktemp("demo") / "results.json"
    stdout = io.StringIO()  # capsys is function-scoped, so capture stdout by hand
    with contextlib.redirect_stdout(stdout):
        status = main(["demo", "--cache-dir", str(cache_dir), "--json", str(out), "--no-progress"])
    assert status == 0
    return stdout.getvalue(), json.loads(out.read_text())


def by_name(results):
    return {row["name"]: row for row in results["rows"]}


def test_demo_prints_every_row(first_run):
    text, _ = first_run
    text, class_text = text.split("Whole-class forgetting")
    table_lines = [line for line in text.splitlines() if line.split("  ")[0].strip() in ROWS]
    assert sorted(line.split("  ")[0].strip() for line in table_lines) == sorted(ROWS)
    for column in ("forget acc", "retain acc", "test acc", "influence (s)", "unlearning (s)", "samples kept"):
        assert column in text


def test_demo_results_are_sensible(first_run):
    _, results = first_run
    rows = by_name(results)
    assert set(rows) == set(ROWS)
    assert rows["Original"]["test_acc"] > 0.9
    assert rows["Retrain"]["forget_acc"] < rows["Original"]["forget_acc"]
    sizes = results["sizes"]
    assert sizes["forget"] + sizes["retain"] == sizes["train"]
    assert rows["GA"]["n_kept"] == sizes["forget"]  # uniform weights visit every forget sample
    assert 0 <= rows["IMU"]["n_kept"] <= sizes["forget"]
    assert not any(results["cache"][name]["hit"] for name in ("original", "retrain"))


def test_whole_class_forgetting_stops_ga_and_imu_at_the_same_depth(first_run):
    text, results = first_run
    result = results["class_forgetting"]
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"Original", "GA", "IMU"} and 0 <= result["class"] < 10
    target = result["settings"]["target_accuracy"]
    assert rows["Original"]["forget_acc"] > 0.9
    for name in ("GA", "IMU"):
        row = rows[name]
        assert row["reached"] and row["forget_acc"] <= target and row["stopped_by"].startswith("forget accuracy")
        assert 0 < row["steps"] <= result["settings"]["max_steps"]
        assert 0 <= row["retain_acc"] <= 1 and 0 <= row["test_acc"] <= 1
    class_text = text.split("Whole-class forgetting")[1]
    for column in ("retain acc", "test acc (other classes)", "test acc (class)", "steps"):
        assert column in class_text
    assert sum(line.startswith(("GA ", "IMU ")) for line in class_text.splitlines()) == 2


@pytest.mark.parametrize("changes", [{"target_accuracy": 1.5}, {"max_steps": 0}, {"batch_size": 2.0}])
def test_class_forgetting_settings_are_validated(changes):
    from imu_fast.demo_class import ClassForgetting

    with pytest.raises((ValueError, TypeError), match="ClassForgetting: "):
        ClassForgetting(**changes)


def test_second_run_uses_the_cache(first_run, cache_dir, monkeypatch, capsys):
    _, results = first_run
    for name in ("original", "retrain"):
        path = Path(results["cache"][name]["path"])
        assert path.parent == cache_dir and path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained a model although it was cached")

    monkeypatch.setattr(imu_fast.demo, "train_classifier", no_training)
    assert main(["demo", "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "loaded from the cache" in text
    # Same seed, same cached models: the accuracies of the cached models are reproduced exactly.
    for name in ("Original", "Retrain"):
        line = next(l for l in text.splitlines() if l.startswith(name))
        assert f"{100 * by_name(results)[name]['test_acc']:.1f}%" in line


class _Stop(Exception):
    pass


def test_no_cache_option_reaches_the_demo(monkeypatch):
    calls = []

    def fake_run(settings, *, cache_dir, use_cache, progress):
        calls.append((settings.seed, cache_dir, use_cache))
        raise _Stop

    monkeypatch.setattr(imu_fast.demo, "run_demo", fake_run)
    with pytest.raises(_Stop):
        main(["demo", "--no-cache", "--seed", "7"])
    assert calls == [(7, None, False)]


@pytest.mark.parametrize("argv", [["demo", "--seed", "-1"], ["demo", "--seed", "x"],
                                  ["demo", "--no-cache", "--cache-dir", "somewhere"],
                                  ["demo", "--json", "/no/such/dir/out.json"]])
def test_bad_arguments_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "yes" in out


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(imu_fast.demo.CACHE_ENV, str(tmp_path))
    assert imu_fast.demo.default_cache_dir() == tmp_path


# --- the digits helpers ---------------------------------------------------------------------


def test_digits_split_shapes_and_determinism():
    a, b, c = load_digits_split(0), load_digits_split(0), load_digits_split(1)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    # stratified: every class is in the test set in about its overall proportion (~36 of 360)
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_forget_retain_split():
    forget, retain = forget_retain_split(1437, 0.1, seed=3)
    assert len(forget) == 144 and len(retain) == 1293
    assert set(forget.tolist()).isdisjoint(retain.tolist())
    assert sorted(forget.tolist() + retain.tolist()) == list(range(1437))
    again, _ = forget_retain_split(1437, 0.1, seed=3)
    other, _ = forget_retain_split(1437, 0.1, seed=4)
    assert torch.equal(forget, again) and not torch.equal(forget, other)


@pytest.mark.parametrize("n, fraction", [(1, 0.1), (100, 0.0), (100, 1.0), (100, -0.5)])
def test_forget_retain_split_rejects_bad_arguments(n, fraction):
    with pytest.raises(ValueError):
        forget_retain_split(n, fraction)
