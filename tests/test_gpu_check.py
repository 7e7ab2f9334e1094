"""The GPU check script stays runnable: --dry-run runs every section on CPU (torch, the C++
kernels, the Triton interpreter), and a worker that dies mid-section is resumed after its case."""

import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check

        yield gpu_check
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_check_dry_run(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--in-process", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = summary["rows"]
    correct = [r for r in rows if "max_rel_err" in r]
    assert correct and all(r["ok"] for r in correct)
    assert {r["backend"] for r in correct} == {"torch", "cpu", "triton"}
    assert {r["op"] for r in correct} == {"outer", "head", "sketch"}
    assert {r["backend"] for r in correct if r["op"] == "sketch"} == {"torch", "cpu", "triton"}
    assert any(r["id"].startswith("sketch agree") for r in correct)
    timed = {r["id"].split()[1] for r in rows if r["id"].startswith("time ")}
    assert timed == {"outer_fisher", "outer_norms_tiled", "outer_norms_gram", "outer_fisher_and_norms_sq",
                     "head_moments", "head_influence", "jl_project", "kron_sketch"}
    assert any(r["id"].startswith("ceiling gemm") for r in rows) and any(r["id"].startswith("anchor") for r in rows)
    # the log was written case by case, each result after its start line
    events = [json.loads(line)["event"] for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert events.count("start") == events.count("row") == len(rows)
    assert "passed, 0 failed" in capsys.readouterr().out


def test_a_dying_worker_is_recorded_and_the_section_resumes(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setenv(gpu_check.FAULT_ENV, "ceiling gemm bf16")
    log = tmp_path / "gpu_check.jsonl"
    args = Namespace(size="dry")
    gpu_check.run_section("time:ceilings", args, log, deadline=float("inf"))
    records = gpu_check.read_log(log)
    faults = [r["id"] for r in records if r["event"] == "fault"]
    rows = [r["id"] for r in records if r["event"] == "row"]
    assert faults == ["ceiling gemm bf16"]
    assert rows == ["ceiling copy", "ceiling gemm tf32", "ceiling gemm fp32"]  # the rest ran in a fresh process
    assert records[-1]["event"] == "done"
