"""``imu-fast unlearn`` and ``imu-fast influence``: from files to files.

``unlearn`` writes the unlearned model (in the form it was read: a Hugging Face folder or a torch
checkpoint) and ``report.json``; ``influence`` writes the scores and the paper recipe's weights as
saved stages (``influence.json`` / ``weights.json`` with their safetensors, reusable by
``imu_fast.load_stage``) and ``scores.csv`` (dataset index, score, weight) for other tools.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch

from ..influence import influence_scores
from ..lm import attention_targets
from ..stages import save_stage
from ..stop import StopCriteria
from ..unlearning import unlearn
from ..weights import influence_weights
from .bad_file import BadFile
from .forget_files import check_forget_path, read_forget
from .model_files import load_model, save_model

# Settings the command line may override; the method's preset gives the rest.
CONFIG_OPTIONS = ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "alpha", "top_fraction", "refresh",
                  "seed")
INFLUENCE_METHODS = ("imu", "imu-uniform")


def default_layers(num_layers: int) -> list[int]:
    """Three consecutive decoder layers (0-based) ending two below the top one: 19, 20, 21 of 24, the
    authors' choice; the top three (or all) for models of fewer than five layers."""
    last = num_layers - 3 if num_layers >= 5 else num_layers - 1
    return list(range(max(0, last - 2), last + 1))


def check_out(out: Path) -> Path:
    """Refuses a folder that holds anything (results are never mixed with other files); it is
    created once the inputs have been read."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadFile(out, "exists and is not an empty folder; give a new folder for the results")
    return out


def influence_parameters(args, loaded) -> list[str] | None:
    """The target parameters, or None for a classifier's head (found automatically)."""
    if args.targets:
        return list(args.targets)
    if loaded.task == "causal-lm":
        if args.layers is None and loaded.num_layers is None:
            raise ValueError("cannot tell how many decoder layers the model has: pass --layers or --targets")
        return attention_targets(loaded.model, args.layers if args.layers is not None else default_layers(loaded.num_layers))
    if args.layers is not None:
        raise ValueError("--layers picks decoder layers of a causal language model; for a classifier pass --targets")
    return None


def _json_value(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing measurement
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def run_unlearn(args) -> int:
    check_forget_path(args.forget)
    out = check_out(args.out)
    loaded = load_model(args.model, args.model_class, args.trust_checkpoint, not args.no_progress)
    forget = read_forget(args.forget, loaded, batch_size=args.batch_size or 256, max_length=args.max_length)
    targets = influence_parameters(args, loaded) if args.method in INFLUENCE_METHODS else None
    if args.method not in INFLUENCE_METHODS and (args.targets or args.layers is not None):
        raise ValueError(f"--targets and --layers choose IMU's influence parameters; method {args.method!r} has none")
    if forget.loss_fn is not None and args.method == "rl":
        raise ValueError("method 'rl' relabels classification data; it does not apply to a causal language model")
    settings = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    stop = None
    if any(v is not None for v in (args.stop_forget_accuracy, args.stop_forget_loss, args.max_steps)):
        stop = StopCriteria(forget_accuracy_at_most=args.stop_forget_accuracy, forget_loss_at_least=args.stop_forget_loss,
                            max_steps=args.max_steps, check_every=args.check_every)
    report = unlearn(loaded.model, forget.data, method=args.method, targets=targets, loss_fn=forget.loss_fn, stop=stop,
                     checkpoint_dir=args.checkpoint_dir, progress=not args.no_progress, **settings)
    out.mkdir(parents=True, exist_ok=True)
    written = save_model(loaded, out)
    summary = {"model": str(args.model), "forget": str(args.forget), "forget_kind": forget.kind, "targets": targets,
               "written": str(written), **{k: _json_value(v) for k, v in vars(report).items()}}
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"unlearned {report.n_forget} samples with {args.method} in {report.steps} steps"
          f"{f' ({report.stopped_by})' if report.stopped_by else ''}; model: {written}, report: {out / 'report.json'}")
    if report.message:
        print(report.message)
    return 0


def run_influence(args) -> int:
    check_forget_path(args.forget)
    out = check_out(args.out)
    loaded = load_model(args.model, args.model_class, args.trust_checkpoint, not args.no_progress)
    forget = read_forget(args.forget, loaded, batch_size=args.batch_size, max_length=args.max_length)
    targets = influence_parameters(args, loaded)
    out.mkdir(parents=True, exist_ok=True)
    result = influence_scores(loaded.model, forget.data, targets=targets, loss_fn=forget.loss_fn if targets else None,
                              damping=args.damping, batch_size=args.batch_size, progress=not args.no_progress,
                              stage=out)
    weights = influence_weights(result.scores, top_fraction=args.top_fraction, clip_quantile=args.clip_quantile)
    save_stage(out, "weights", {"weights": weights, "indices": result.indices},
               settings={"damping": args.damping, "top_fraction": args.top_fraction, "clip_quantile": args.clip_quantile,
                         "targets": targets}, model=loaded.model, forget=forget.data)
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "score", "weight"])
        writer.writerows(zip(result.indices.tolist(), result.scores.tolist(), weights.tolist()))
    kept = int((weights > 0).sum())
    print(f"scored {result.n} samples through {result.head} in {result.seconds:.2f} s; {kept} kept by the paper recipe; "
          f"written to {out}")
    return 0
