"""The sketch accuracy study: sketches wide enough to be exact agree perfectly with the exact
influence (full Fisher on the digits MLP), small ones do not, and the report is written with its
recommendation computed from the rows."""

import json

import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from imu_fast.studies import sketch_accuracy  # noqa: E402


def test_exact_width_sketches_reproduce_full_fisher_influence_and_the_report(monkeypatch, tmp_path):
    # Side 64 keeps both MLP weights exactly (64 x 64 and 10 x 64), other_dim 64 keeps the biases;
    # JL to 8,192 > P = 4,810 keeps everything: the sketch-space full Fisher is then the exact one.
    monkeypatch.setattr(sketch_accuracy, "KRON_SIDES", {"quick": (2, 64)})
    monkeypatch.setattr(sketch_accuracy, "JL_DIMS", {"quick": (8, 8192)})
    assert sketch_accuracy.main(["--out", str(tmp_path), "--quick", "--parts", "mlp", "--seeds", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["parts"]["mlp"]["P"] == 4810 and results["parts"]["mlp"]["n"] > 100
    rows = [r for r in results["rows"] if r["part"] == "mlp (all)"]
    exact = [r for r in rows if r["k"] in (64 * 64, 8192)]
    assert {r["kind"] for r in exact} == {"kronecker", "jl"}
    for r in exact:
        assert r["spearman"] > 0.9999 and r["overlap@0.1"] == 1.0 and r["overlap@0.5"] == 1.0, r
    for k in (4, 8):  # two columns per side, or 8 in all, lose information
        assert next(r for r in rows if r["k"] == k)["spearman"] < 0.99
    picks = sketch_accuracy.smallest_good_k(results["summary"])
    assert picks[("mlp (all)", "jl")] in (8, 8192) and picks[("mlp (all)", "kronecker")] in (4, 4096)
    summary = (tmp_path / "summary.md").read_text()
    assert "**Which k to pick**" in summary and f"mlp (all), jl: k = {picks[('mlp (all)', 'jl')]}" in summary
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_smallest_good_k_reads_thresholds():
    rows = [{"part": "p", "kind": "jl", "k": k, "spearman": s, "overlap@0.1": o}
            for k, s, o in ((16, 0.95, 0.5), (64, 0.92, 0.95), (256, 0.99, 1.0))]
    rows.append({"part": "p", "kind": "kronecker", "k": 16, "spearman": 0.5, "overlap@0.1": 1.0})
    assert sketch_accuracy.smallest_good_k(rows) == {("p", "jl"): 64, ("p", "kronecker"): None}
