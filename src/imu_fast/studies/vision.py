"""``imu-fast bench vision``: every unlearning method on scikit-learn's digits, over seeds and learning rates.

Two scenarios (10% random sample-wise forgetting, whole-class forgetting), several seeds, the
original model and Retrain (the gold standard) per seed, and IMU, its α = 0 variant, the uniform
ablation, GA, NPO, RL and FT each over a learning-rate sweep. Writes ``runs.json`` (every run),
``summary.md`` (tables, and a computed statement on IMU vs GA at matched forgetting) and PNG plots.

Only argparse work happens at import time: the study's modules load inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import names_of
from ..argtypes import non_negative_int as _non_negative_int
from ..argtypes import positive_int as _positive_int

DEFAULT_OUT = "imu_fast_results/vision"
# (full study, --quick)
DEFAULT_SEEDS = (3, 1)
DEFAULT_LRS = (11, 2)
DEFAULT_REFINE = (6, 2)


# Kept here (not imported from vision_run) so that building the parser stays free of torch.
VARIANT_KEYS = ("imu", "imu-sketch", "imu-a0", "imu-uniform", "imu-uniform-a0", "ga", "npo", "rl", "ft")
SCENARIO_KEYS = ("random", "class")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Unlearn 10% random samples and one whole class of scikit-learn's digits with IMU, IMU (alpha=0), "
        "IMU-uniform, GA, NPO, RL and FT over a learning-rate sweep and several seeds; compare with Retrain. "
        "Writes runs.json, summary.md and PNG plots into --out."
    )
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small run: {DEFAULT_SEEDS[1]} seed, {DEFAULT_LRS[1]} learning rates per method, "
                             f"{DEFAULT_REFINE[1]} refinement steps (explicit options below still win)")
    parser.add_argument("--seeds", type=_positive_int, default=None,
                        help=f"number of seeds, 0..N-1 (default {DEFAULT_SEEDS[0]}; quick {DEFAULT_SEEDS[1]})")
    parser.add_argument("--lrs-per-method", type=_positive_int, default=None,
                        help=f"log-spaced learning rates per method (default {DEFAULT_LRS[0]}; quick {DEFAULT_LRS[1]})")
    parser.add_argument("--refine-steps", type=_non_negative_int, default=None,
                        help="bisection steps in log(lr) per method and target UA after the sweep "
                             f"(default {DEFAULT_REFINE[0]}; quick {DEFAULT_REFINE[1]})")
    parser.add_argument("--methods", type=names_of(VARIANT_KEYS, "method"), default=VARIANT_KEYS,
                        help=f"comma-separated subset of {','.join(VARIANT_KEYS)} (default: all)")
    parser.add_argument("--scenarios", type=names_of(SCENARIO_KEYS, "scenario"), default=SCENARIO_KEYS,
                        help=f"comma-separated subset of {','.join(SCENARIO_KEYS)} (default: both)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch CPU threads (default 1: the models are tiny, more threads only add overhead)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, default=None,
                       help="where trained models are cached (default: $IMU_FAST_CACHE or ~/.cache/imu_fast)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write cached models")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def settings_from_args(args: argparse.Namespace):
    from .vision_run import StudySettings

    pick = 1 if args.quick else 0

    def choose(value, defaults):
        return defaults[pick] if value is None else value

    return StudySettings(
        seeds=tuple(range(choose(args.seeds, DEFAULT_SEEDS))),
        scenarios=tuple(args.scenarios),
        variants=tuple(args.methods),
        lrs_per_method=choose(args.lrs_per_method, DEFAULT_LRS),
        refine_steps=choose(args.refine_steps, DEFAULT_REFINE),
        threads=args.threads,
        cache_dir=str(args.cache_dir) if args.cache_dir else None,
        use_cache=not args.no_cache,
        quick=bool(args.quick),
    )


def write_outputs(results: dict, out: Path) -> dict[str, Path]:
    """Writes runs.json, the PNGs and summary.md into ``out``; returns their paths."""
    import json

    from .vision_plots import plot_scenario
    from .vision_report import _json_safe, matched_summary, summary_markdown

    out.mkdir(parents=True, exist_ok=True)
    matched = matched_summary(results)
    plots = {scenario: plot_scenario(results, scenario, out) for scenario in results["scenarios"]}
    paths = {"runs": out / "runs.json", "summary": out / "summary.md"}
    data = _json_safe({**results, "matched": matched})
    # One line per run keeps the file small and still greppable.
    runs = ",\n".join("  " + json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in data.pop("runs"))
    text = json.dumps({**data, "runs": "__RUNS__"}, indent=1, ensure_ascii=False)
    paths["runs"].write_text(text.replace('"__RUNS__"', "[\n" + runs + "\n ]") + "\n")
    paths["summary"].write_text(summary_markdown(results, matched, plots))
    for files in plots.values():
        for f in files:
            paths[f] = out / f
    return paths


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        print(f"imu-fast bench vision: {args.out} exists and is not a directory")
        return 2
    from .vision_run import run_study

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"imu-fast bench vision: {exc}")
        return 2
    results = run_study(settings, progress=not args.no_progress)
    paths = write_outputs(results, args.out)
    print(f"vision study: {len([r for r in results['runs'] if r['phase'] != 'reference'])} unlearning runs in "
          f"{results['wall_seconds']:.0f} s; wrote {', '.join(sorted(p.name for p in paths.values()))} to {args.out}")
    return 0
