"""The ``imu-fast`` command line.

Each subcommand is one ``add_<name>_command(subparsers)`` function that declares its options and
sets ``run`` (a function of the parsed arguments returning an exit status); ``COMMANDS`` lists them.
A command with its own subcommands (e.g. a future ``bench vision``) adds a nested
``add_subparsers`` inside its add function in the same way.
Heavy imports happen inside ``run`` functions so ``imu-fast --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from .argtypes import directory as _directory
from .argtypes import non_negative_int as _non_negative_int
from .argtypes import output_file as _output_file


# ---------------------------------------------------------------------------------------------
# imu-fast demo


def add_demo_command(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="unlearn 10%% of the handwritten digits with GA and IMU, compare with retraining",
        # description is printed as written, help is %-formatted: 10% there, 10%% here.
        description="Train a small CNN on scikit-learn's handwritten digits, unlearn a random 10% of the "
        "training set with GA, IMU and IMU with uniform weights, retrain from scratch on the rest, "
        "and print one comparison table. Trained models are cached, so a rerun is fast.",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the split, forget set and training (default 0)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=_directory, default=None,
                       help="where trained models are cached (default: $IMU_FAST_CACHE or ~/.cache/imu_fast)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write cached models")
    p.add_argument("--json", type=_output_file, default=None, metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, format_results, run_demo

    results = run_demo(DemoSettings(seed=args.seed), cache_dir=args.cache_dir, use_cache=not args.no_cache,
                       progress=not args.no_progress)
    print(format_results(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"Results written to {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# imu-fast backends


def add_backends_command(subparsers) -> None:
    p = subparsers.add_parser("backends", help="list the compute backends and whether they are available here")
    p.set_defaults(run=run_backends_command)


def run_backends_command(args: argparse.Namespace) -> int:
    from . import backends

    table = backends()
    width = max(len(name) for name in table)
    print(f"{'backend'.ljust(width)}  available  reason")
    for name, info in table.items():
        print(f"{name.ljust(width)}  {('yes' if info['available'] else 'no').ljust(9)}  {info['reason']}")
    return 0


# ---------------------------------------------------------------------------------------------
# imu-fast bench vision | lm
#
# Each study lives in imu_fast.studies.<name> and provides add_arguments(parser) and run(args) -> int.

STUDIES = {"vision": "forgetting on scikit-learn's digits: every method, seeds and a learning-rate sweep",
           "lm": "forgetting fictitious facts from SmolLM2-135M: GA, NPO and IMU"}


def add_bench_command(subparsers) -> None:
    import importlib

    p = subparsers.add_parser("bench", help="reproduce a study: results, tables and plots in a folder")
    p.set_defaults(run=lambda args: _print_help(p))  # bare `imu-fast bench`: this command's help, not the top's
    studies = p.add_subparsers(title="studies", metavar="STUDY")
    for name, summary in STUDIES.items():
        sp = studies.add_parser(name, help=summary, description=summary)
        try:
            module = importlib.import_module(f"imu_fast.studies.{name}")
        except ImportError as exc:  # keep every other command usable
            sp.set_defaults(run=lambda args, exc=exc, name=name: _study_unavailable(name, exc))
            continue
        module.add_arguments(sp)
        sp.set_defaults(run=module.run)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _study_unavailable(name: str, exc: ImportError) -> int:
    print(f"imu-fast bench {name} is unavailable: {exc}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------

COMMANDS = (add_demo_command, add_backends_command, add_bench_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imu-fast", description="Influence-guided machine unlearning (IMU).")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imu-fast`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        return _print_help(parser)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
