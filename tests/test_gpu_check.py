"""The GPU check script stays runnable: its --dry-run mode runs every section on CPU."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_check_dry_run(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["correctness"] and all(row["ok"] for row in results["correctness"])
    assert {row["op"] for row in results["kernels"]} == {"head_moments", "head_influence", "outer_fisher",
                                                          "outer_norms_tiled"}
    assert "passed, 0 failed" in capsys.readouterr().out
