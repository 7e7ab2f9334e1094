"""``imu-fast bench vision``: a tiny end-to-end run, and the matched-forgetting comparison on hand-made numbers."""

import contextlib
import io
import json
import math

import pytest

from imu_fast.cli import main
from imu_fast.studies.vision_matched import (
    compare_matched,
    describe_comparison,
    mean_std,
    utility_at_forgetting,
)
from imu_fast.studies.vision_run import VARIANTS, forgotten_class, lr_grid, next_bisection_lr

# ---------------------------------------------------------------------------------------------
# Matched forgetting on hand-made curves (points in lr order, the original model first)


def test_interpolates_at_the_first_crossing():
    m = utility_at_forgetting([0, 20, 60], [99, 90, 50], 10, max_jump=25)
    assert m.reached and m.valid and not m.exact and m.jump == 20
    assert not utility_at_forgetting([0, 20, 60], [99, 90, 50], 10).valid  # default max_jump 10 < 20
    assert m.value == pytest.approx(94.5)  # halfway between (0, 99) and (20, 90)
    assert (m.lo_ua, m.hi_ua, m.first_value) == (0, 20, 90)


def test_exact_hit_and_already_reached():
    m = utility_at_forgetting([0, 5, 10, 40], [99, 97, 95, 60], 10)
    assert m.exact and m.valid and m.value == 95
    m = utility_at_forgetting([2, 5], [98, 97], 1.5)  # the original already forgets that much
    assert m.value == 98 and m.valid


def test_first_crossing_wins_on_a_non_monotone_curve():
    m = utility_at_forgetting([0, 30, 5, 80], [99, 80, 98, 20], 20)
    assert m.value == pytest.approx(99 + (80 - 99) * 20 / 30)


def test_unreached_and_jumps():
    m = utility_at_forgetting([0, 1, 3], [99, 99, 98], 50)
    assert not m.reached and not m.valid and math.isnan(m.value)
    m = utility_at_forgetting([0, 87], [99, 10], 1.4)  # GA-style jump: no model near UA 1.4
    assert m.reached and not m.valid
    assert m.value == pytest.approx(99 - 89 * 1.4 / 87)
    assert m.first_value == 10
    assert utility_at_forgetting([0, 87], [99, 10], 1.4, max_jump=100).valid


def test_bad_curves_are_refused():
    with pytest.raises(ValueError):
        utility_at_forgetting([0, 1], [99], 1)
    with pytest.raises(ValueError):
        utility_at_forgetting([], [], 1)
    with pytest.raises(ValueError):
        utility_at_forgetting([0, float("nan")], [99, 98], 1)


def test_compare_matched_pairs_seeds_and_reports_both_ways():
    # Three seeds; IMU keeps 95, 96, 97 and GA 90, 92, 94 at UA 10; GA's third seed jumps across the target.
    imu = [utility_at_forgetting([0, 10], [99, v], 10) for v in (95, 96, 97)]
    ga = [utility_at_forgetting([0, 10], [99, 90], 10), utility_at_forgetting([0, 10], [99, 92], 10),
          utility_at_forgetting([0, 50], [99, 20], 10)]
    comp = compare_matched(imu, ga)
    assert comp.n_paired == 2 and comp.n_seeds == 3 and comp.b_invalid == 1 and comp.a_invalid == 0
    assert comp.diff[0] == pytest.approx(4.5)  # (95 - 90 + 96 - 92) / 2
    assert comp.relative_percent == pytest.approx(100 * (95.5 - 91) / 91)
    text = describe_comparison("IMU", "GA", "test accuracy", comp)
    assert text.startswith("IMU keeps more test accuracy than GA") and "+4.50" in text
    assert "higher on 2, lower on 0, tied on 0 of 2 paired" in text and "1 seed(s) without" in text
    reverse = describe_comparison("GA", "IMU", "test accuracy", compare_matched(ga, imu))
    assert reverse.startswith("GA keeps less test accuracy than IMU") and "-4.50" in reverse
    none = describe_comparison("IMU", "GA", "TA", compare_matched(imu[:1], ga[2:]))
    assert "undecided" in none
    with pytest.raises(ValueError):
        compare_matched(imu, ga[:2])


def test_mean_std():
    assert mean_std([1, 3]) == pytest.approx((2, math.sqrt(2)))
    assert mean_std([5]) == (5, 0)
    assert all(math.isnan(x) for x in mean_std([]))


# ---------------------------------------------------------------------------------------------
# Sweep helpers


def test_lr_grid():
    grid = lr_grid(1e-3, 1e-1, 5, extra=(0.01, 0.02))
    assert grid == sorted(grid) and grid[0] == 1e-3 and grid[-1] == 0.1 and 0.01 in grid and 0.02 in grid
    assert len(grid) == 6  # 0.01 is on the grid already
    assert lr_grid(1e-4, 1e-2, 1) == [1e-3]
    with pytest.raises(ValueError):
        lr_grid(0, 1, 3)


def test_next_bisection_lr():
    def pts(*pairs):
        return [(lr, {"UA": ua}) for lr, ua in pairs]

    curve = pts((0, 0), (0.01, 0), (0.1, 80))
    assert next_bisection_lr(curve, 10, 2.0) == pytest.approx(math.sqrt(0.001))
    assert next_bisection_lr(pts((0, 0), (0.01, 50)), 10, 2.0) == 0.005  # below the first run
    assert next_bisection_lr(pts((0, 0), (0.01, 5)), 10, 2.0) is None  # never reached
    assert next_bisection_lr(pts((0, 20), (0.01, 50)), 10, 2.0) is None  # the original already is there
    assert next_bisection_lr(pts((0, 0), (0.01, 0), (0.010001, 80)), 10, 2.0) is None  # bracket too narrow
    assert next_bisection_lr(pts((0, 0), (0.01, 9.5), (0.1, 10.1)), 10, 2.0, min_jump=0.7) is None


def test_forgotten_classes_differ_across_the_first_seeds():
    classes = [forgotten_class(s) for s in range(10)]
    assert sorted(classes) == list(range(10))


# ---------------------------------------------------------------------------------------------
# End to end through the command line


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision")
    cache = tmp_path_factory.mktemp("vision_cache")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["bench", "vision", "--quick", "--out", str(out), "--seeds", "1", "--lrs-per-method", "1",
                       "--refine-steps", "1", "--cache-dir", str(cache), "--no-progress"])
    assert status == 0
    return out, stdout.getvalue()


def test_writes_every_file(study):
    out, text = study
    names = {p.name for p in out.iterdir()}
    expected = {"runs.json", "summary.md"} | {f"{s}_{p}.png" for s in ("random", "class")
                                             for p in ("ta_vs_forget_acc", "ta_vs_mia")}
    assert expected <= names
    for name in expected:
        assert (out / name).stat().st_size > 0
    assert (out / "random_ta_vs_mia.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "runs.json" in text


def test_runs_cover_every_method_and_scenario(study):
    out, _ = study
    results = json.loads((out / "runs.json").read_text())
    runs = results["runs"]
    for scenario in ("random", "class"):
        have = {r["variant"] for r in runs if r["scenario"] == scenario}
        assert have == set(VARIANTS) | {"original", "retrain"}
        # the authors' default IMU point (lr 0.01, alpha 0.2, top_fraction 0.1) is always run
        assert any(r["variant"] == "imu" and r["lr"] == 0.01 and r["config"]["alpha"] == 0.2
                   and r["config"]["top_fraction"] == 0.1 for r in runs if r["scenario"] == scenario)
    assert {r["phase"] for r in runs} >= {"sweep", "reference"}
    for r in runs:
        for key in ("scenario", "seed", "method", "lr", "settings", "metrics", "influence_seconds",
                    "update_seconds", "avg_gap"):
            assert key in r
        assert r["metrics"] is not None, r
        for k in ("UA", "RA", "TA", "MIA"):
            assert 0 <= r["metrics"][k] <= 100
        assert 0 <= r["avg_gap"] <= 100
        assert r["influence_seconds"] >= 0 and r["update_seconds"] >= 0
        if r["method"] in ("imu",):
            assert r["influence_seconds"] > 0 and r["n_kept"] >= 1
    cells = {c["scenario"]: c for c in results["cells"]}
    assert cells["class"]["retrain"]["UA"] == 100.0  # Retrain never saw the class
    assert cells["class"]["target_class"] in range(10)
    assert cells["random"]["sizes"]["forget"] == round(0.1 * cells["random"]["sizes"]["train"])
    assert "matched" in results and set(results["matched"]) == {"random", "class"}


def test_summary_has_tables_and_the_statement(study):
    out, _ = study
    text = (out / "summary.md").read_text()
    assert "| method | lr | UA | RA | TA | MIA |" in text
    for label in ("Original", "Retrain", "IMU", "GA", "NPO", "RL", "FT", "IMU-uniform"):
        assert f"| {label} |" in text
    assert "## IMU vs GA at matched forgetting" in text
    statements = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(statements) == 4  # TA and RA, two scenarios
    assert all("IMU" in s and "GA" in s for s in statements)
    assert all(("keeps more" in s) or ("keeps less" in s) or ("keep the same" in s) or ("undecided" in s)
               for s in statements)
    assert "## Full learning-rate sweep" in text and "(authors' default)" in text
    assert "random_ta_vs_forget_acc.png" in text


def test_bad_options_are_refused():
    with pytest.raises(SystemExit):
        main(["bench", "vision", "--methods", "imu,nope"])
    with pytest.raises(SystemExit):
        main(["bench", "vision", "--seeds", "0"])
