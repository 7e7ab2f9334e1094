"""``imu-fast demo``: unlearn 10% of the real handwritten digits and compare with retraining;
then forget a whole class with GA and IMU stopped at the same depth.

Steps: train a small CNN on the digits' training set (the *original* model); pick a seeded random
10% of that set as the forget set; unlearn it from copies of the original with plain gradient
ascent (GA), IMU, and IMU with uniform weights (the ablation that isolates the influence
weighting); retrain from scratch on the retain set (the gold standard); print one table. Then
the second scenario (``demo_class``): one whole class forgotten by GA and by IMU, each stopped
once its forget accuracy reaches the same target, and a table of what each kept.

Trained models are cached, keyed by a hash of everything that determines their weights (the
architecture, the training settings and the training data themselves), so a rerun skips training.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import unlearn
from .data import forget_retain_split, load_digits_split
from .demo_class import ClassForgetting, format_class_table, run_class_forgetting
from .models import TrainSettings, accuracy, digits_cnn, train_classifier

CACHE_ENV = "IMU_FAST_CACHE"
# Bump when the cached files' layout or the model code changes in a way the key cannot see.
CACHE_VERSION = 1

# (row label, imu_fast.unlearn method) in the order the table shows them.
UNLEARN_ROWS = (("GA", "ga"), ("IMU", "imu"), ("IMU (uniform weights)", "imu-uniform"))


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the demo's data, models and unlearning runs."""

    seed: int = 0  # data split, forget set, model initialisation, shuffling
    test_fraction: float = 0.2
    forget_fraction: float = 0.1
    width: int = 32  # channels of the CNN's first conv layer
    train: TrainSettings = TrainSettings()  # its own seed is ignored: ``seed`` above drives everything
    class_forgetting: ClassForgetting = ClassForgetting()

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def train_settings(self) -> TrainSettings:
        return dataclasses.replace(self.train, seed=self.seed)


@dataclass
class Row:
    """One line of the results table. Times and kept counts are None where they do not apply."""

    name: str
    forget_acc: float
    retain_acc: float
    test_acc: float
    influence_seconds: float | None = None
    unlearn_seconds: float | None = None
    n_kept: int | None = None
    n_forget: int | None = None
    note: str = ""


@dataclass
class Trained:
    model: nn.Module
    seconds: float  # wall time of the training run (measured when it ran, also for a cached model)
    cached: bool  # loaded from the cache rather than trained now
    path: Path | None  # the cache file, if caching is on


# ---------------------------------------------------------------------------------------------
# Caching trained models


def default_cache_dir() -> Path:
    """``$IMU_FAST_CACHE`` if set, else ``~/.cache/imu_fast``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imu_fast"


def cache_key(recipe: dict, x: torch.Tensor, y: torch.Tensor) -> str:
    """A hash of the training recipe and the exact training tensors.

    Hashing the data, not just the seeds that chose them, means a change anywhere upstream (the
    split, the forget set, scikit-learn's copy of the digits) can never return a stale model.
    """
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **recipe}, sort_keys=True).encode())
    for t in (x, y):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _load_cached(path: Path, model: nn.Module) -> float | None:
    """Loads ``path`` into ``model`` and returns the recorded training seconds, or None if unusable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return float(saved["seconds"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file: retrain and overwrite it
        # (torch's own message suggests weights_only=False, which we never want for a cache file)
        print(f"warning: ignoring unreadable cache file {path} ({type(exc).__name__}); retraining", file=sys.stderr)
        return None


def _save_cached(path: Path, model: nn.Module, seconds: float) -> None:
    """Writes atomically (temp file + rename) so a killed run never leaves a half-written cache file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save({"state_dict": model.state_dict(), "seconds": seconds}, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # the cache only saves time; the demo's results do not depend on it
        print(f"warning: could not write the cache file {path} ({exc})", file=sys.stderr)


def trained_model(name: str, build: Callable[[], nn.Module], recipe: dict, x: torch.Tensor, y: torch.Tensor,
                  settings: TrainSettings, cache_dir: Path | None, progress: bool) -> Trained:
    """The model ``build()`` trained on ``(x, y)``: from ``cache_dir`` if there, else trained (and cached)."""
    model = build()
    path = cache_dir / f"{name}-{cache_key({**recipe, 'train': settings.as_dict()}, x, y)}.pt" if cache_dir else None
    if path is not None:
        seconds = _load_cached(path, model)
        if seconds is not None:
            return Trained(model.eval(), seconds, True, path)
    started = time.perf_counter()
    train_classifier(model, x, y, settings, progress=progress, desc=f"train {name}")
    seconds = time.perf_counter() - started
    if path is not None:
        _save_cached(path, model, seconds)
    return Trained(model.eval(), seconds, False, path)


# ---------------------------------------------------------------------------------------------
# The experiment


def _evaluate(name: str, model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], **fields) -> Row:
    acc = {part: accuracy(model, *xy) for part, xy in splits.items()}
    return Row(name, acc["forget"], acc["retain"], acc["test"], **fields)


def run_demo(settings: DemoSettings = DemoSettings(), *, cache_dir: Path | None = None, use_cache: bool = True,
             progress: bool = True) -> dict:
    """Runs the whole demo and returns its results (settings, sizes, table rows, report messages)."""
    started = time.perf_counter()
    cache_dir = (cache_dir or default_cache_dir()) if use_cache else None
    data = load_digits_split(settings.seed, settings.test_fraction)
    forget_idx, retain_idx = forget_retain_split(len(data.y_train), settings.forget_fraction, settings.seed)
    splits = {
        "forget": (data.x_train[forget_idx], data.y_train[forget_idx]),
        "retain": (data.x_train[retain_idx], data.y_train[retain_idx]),
        "test": (data.x_test, data.y_test),
    }
    train = settings.train_settings()
    recipe = {"model": "DigitsCNN", "width": settings.width, "init_seed": settings.seed}

    def build() -> nn.Module:
        return digits_cnn(settings.seed, data.num_classes, settings.width)

    original = trained_model("original", build, recipe, data.x_train, data.y_train, train, cache_dir, progress)
    retrained = trained_model("retrain", build, recipe, *splits["retain"], train, cache_dir, progress)

    rows = [
        _evaluate("Original", original.model, splits),
        _evaluate("Retrain", retrained.model, splits, unlearn_seconds=retrained.seconds,
                  note="cached; time measured when trained" if retrained.cached else ""),
    ]
    forget_set = TensorDataset(*splits["forget"])
    messages = {}
    for label, method in UNLEARN_ROWS:
        model = copy.deepcopy(original.model)
        report = unlearn(model, forget_set, method=method, progress=progress, seed=settings.seed)
        rows.append(_evaluate(label, model, splits, influence_seconds=report.influence_seconds,
                              unlearn_seconds=report.update_seconds, n_kept=report.n_kept,
                              n_forget=report.n_forget, note=report.message))
        if report.message:
            messages[label] = report.message
    class_result = run_class_forgetting(original.model, data, settings.seed, settings.class_forgetting, progress)
    return {
        "settings": {**dataclasses.asdict(settings), "train": train.as_dict()},  # the seed actually used
        "sizes": {"train": len(data.y_train), "test": len(data.y_test), "forget": len(forget_idx),
                  "retain": len(retain_idx)},
        "cache": {name: {"path": str(t.path) if t.path else None, "hit": t.cached}
                  for name, t in (("original", original), ("retrain", retrained))},
        "rows": [dataclasses.asdict(row) for row in rows],
        "messages": messages,
        "class_forgetting": class_result,
        "wall_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------
# Presentation

COLUMNS = ("method", "forget acc", "retain acc", "test acc", "influence (s)", "unlearning (s)", "samples kept")


def _cells(row: dict) -> list[str]:
    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    def sec(v: float | None, mark: str = "") -> str:
        return "-" if v is None else f"{v:.3f}{mark}"

    kept = "-" if row["n_kept"] is None else f"{row['n_kept']}/{row['n_forget']}"
    mark = "*" if row["name"] == "Retrain" and row["note"] else ""
    return [row["name"], pct(row["forget_acc"]), pct(row["retain_acc"]), pct(row["test_acc"]),
            sec(row["influence_seconds"]), sec(row["unlearn_seconds"], mark), kept]


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table: first column left-aligned, the numbers right-aligned."""
    body = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    return "\n".join([fmt(body[0]), "  ".join("-" * w for w in widths), *map(fmt, body[1:])])


def format_results(results: dict) -> str:
    s, sizes = results["settings"], results["sizes"]
    lines = [
        f"Digits (scikit-learn, 8x8): {sizes['train']} train / {sizes['test']} test; forget set = random "
        f"{100 * s['forget_fraction']:.0f}% of train ({sizes['forget']} samples), retain = {sizes['retain']}; seed {s['seed']}",
        "",
        format_table(results["rows"]),
        "",
        "forget/retain/test acc: accuracy on the forget set, the retain set and the test set "
        "(Retrain is the target). influence: time to compute influence weights; unlearning: the update "
        "loop (for Retrain: training from scratch).",
    ]
    if any(r["name"] == "Retrain" and r["note"] for r in results["rows"]):
        lines.append("* Retrain was loaded from the cache; its time was measured when it was trained.")
    for label, message in results["messages"].items():
        lines.append(f"{label}: {message}")
    lines += ["", format_class_table(results["class_forgetting"]), "",
              f"Total wall time: {results['wall_seconds']:.1f} s"]
    return "\n".join(lines)
