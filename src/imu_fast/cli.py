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
from pathlib import Path

from .argtypes import directory as _directory
from .argtypes import finite_float as _finite_float
from .argtypes import fraction as _fraction
from .argtypes import non_negative_int as _non_negative_int
from .argtypes import output_file as _output_file
from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int
from .extras import MissingExtra


# ---------------------------------------------------------------------------------------------
# imu-fast demo


def add_demo_command(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="unlearn 10%% of the handwritten digits with GA and IMU, compare with retraining; forget a class",
        # description is printed as written, help is %-formatted: 10% there, 10%% here.
        description="Train a small CNN on scikit-learn's handwritten digits, unlearn a random 10% of the "
        "training set with GA, IMU and IMU with uniform weights, retrain from scratch on the rest, "
        "and print one comparison table; then forget one whole class with GA and IMU, each stopped at "
        "the same forget accuracy, and compare what they kept. Trained models are cached, so a rerun is fast.",
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
# imu-fast unlearn | influence: from files to files (the work is in imu_fast.scripts)

MODEL_HELP = ("a Hugging Face save_pretrained folder (causal LM or sequence classifier), or a torch checkpoint: a "
              "state dict (with --model-class) or a whole pickled nn.Module (with --trust-checkpoint)")
FORGET_HELP = ('a .jsonl of {"text": ...}, {"question": ..., "answer": ...} or {"text": ..., "label": k} lines, or a '
               ".pt of tensors: (X, Y) or a dict of model inputs")
LAYERS_HELP = ("decoder layers (0-based) whose q/k/v/o projections are the influence parameters of a causal LM "
               "(default: three layers ending two below the top one, e.g. 19 20 21 of 24)")


def _add_inputs(p) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="PATH", help=MODEL_HELP)
    p.add_argument("--forget", type=Path, required=True, metavar="FILE", help=FORGET_HELP)
    p.add_argument("--out", type=_directory, required=True, metavar="DIR", help="a new (or empty) folder for the results")
    p.add_argument("--model-class", default=None, metavar="MODULE:FUNCTION",
                   help="builds the model a state-dict checkpoint belongs to")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow loading a pickled nn.Module (this runs code from the file)")
    p.add_argument("--max-length", type=_positive_int, default=512, help="tokens kept per text (default 512)")
    influence = p.add_mutually_exclusive_group()
    influence.add_argument("--layers", type=_non_negative_int, nargs="+", default=None, metavar="I", help=LAYERS_HELP)
    influence.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                           help="parameter or module names to use as the influence parameters (default: the "
                                "classifier head, or --layers for a causal LM)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_unlearn_command(subparsers) -> None:
    p = subparsers.add_parser("unlearn", help="unlearn a forget file from a saved model; write the model and a report",
                              description="Unlearn the samples of --forget from --model with --method and write the "
                              "unlearned model (in the form it was read) and report.json to --out.")
    _add_inputs(p)
    p.add_argument("--method", default="imu", choices=("imu", "ga", "imu-uniform", "npo", "rl"),
                   help="imu (default), ga, imu-uniform, npo or rl (retain-free methods)")
    p.add_argument("--epochs", type=_non_negative_int, default=None)
    p.add_argument("--lr", type=_positive_float, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="sgd (default) or adamw")
    p.add_argument("--weight-decay", type=_finite_float, default=None)
    p.add_argument("--alpha", type=_finite_float, default=None, help="IMU's L1 penalty on the influence parameters")
    p.add_argument("--top-fraction", type=_fraction, default=None)
    p.add_argument("--refresh", choices=("once", "epoch", "batch"), default=None)
    p.add_argument("--seed", type=_non_negative_int, default=None)
    p.add_argument("--stop-forget-accuracy", type=_fraction, default=None, metavar="FRACTION",
                   help="stop once the forget accuracy is at most this (checked on the forget set)")
    p.add_argument("--stop-forget-loss", type=_finite_float, default=None, metavar="LOSS",
                   help="stop once the mean forget loss is at least this")
    p.add_argument("--max-steps", type=_non_negative_int, default=None, help="a budget of optimiser steps")
    p.add_argument("--check-every", type=_positive_int, default=1, help="steps between forget-set checks (default 1)")
    p.add_argument("--checkpoint-dir", type=_directory, default=None, metavar="DIR",
                   help="checkpoint there; a run killed and started again with the same folder resumes")
    p.set_defaults(run=_script("unlearn", "run_unlearn"))


def add_influence_command(subparsers) -> None:
    p = subparsers.add_parser("influence", help="score a forget file's samples; write scores and weights",
                              description="Compute the influence score of every sample of --forget on --model and "
                              "the paper recipe's weights; write them to --out as saved stages and scores.csv.")
    _add_inputs(p)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--damping", type=_finite_float, default=0.01)
    p.add_argument("--top-fraction", type=_fraction, default=0.1)
    p.add_argument("--clip-quantile", type=_fraction, default=0.93)
    p.set_defaults(run=_script("influence", "run_influence"))


def _script(name: str, function: str):
    """A run function that imports the work (and torch) only when the command runs; a bad file or
    setting is one line on stderr and exit status 2, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from .scripts import commands

        try:
            return getattr(commands, function)(args)
        except (ValueError, TypeError, OSError, ImportError) as exc:
            print(f"imu-fast {name}: error: {exc}", file=sys.stderr)
            return 2

    return run


# ---------------------------------------------------------------------------------------------

COMMANDS = (add_demo_command, add_backends_command, add_bench_command, add_unlearn_command, add_influence_command)


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
    try:
        return args.run(args)
    except MissingExtra as exc:  # an optional dependency the command needs: say which extra, no traceback
        print(f"imu-fast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
