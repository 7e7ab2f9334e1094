"""The vision study's experiment: scenarios, seeds, every method over a learning-rate sweep.

Per (scenario, seed): the original model (trained on the whole training split) and Retrain (the
same recipe from the same initialisation, on D_r only) come from ``imu_fast.demo``'s cached
training; every method then unlearns a copy of the original at each learning rate of its sweep.
After the sweep, each method's curve is refined by bisection in log(lr) around the first crossing
of each matched-forgetting target (Retrain's UA and a few fixed UA levels), so that the matched
comparison reads the curve between nearby runs instead of across a wide learning-rate gap.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

import imu_fast
from imu_fast import avg_gap, evaluate, unlearn
from imu_fast.data import forget_retain_split, load_digits_split
from imu_fast.demo import default_cache_dir, trained_model
from imu_fast.metrics import METRIC_KEYS, accuracy_percent
from imu_fast.models import TrainSettings, digits_cnn

SCENARIOS = {
    "random": "10% random sample-wise forgetting",
    "class": "whole-class forgetting (one class per seed)",
}

# Seeds pick the forgotten class from this fixed permutation, so the first seeds forget different classes.
_CLASS_ORDER_SEED = 20261128


@dataclass(frozen=True)
class Variant:
    """One method setting whose learning rate is swept."""

    key: str
    label: str
    method: str  # imu_fast.unlearn's method
    lr_range: tuple[float, float]  # swept log-uniformly, both ends included
    overrides: tuple[tuple[str, float], ...] = ()  # settings changed from the method's preset
    extra_lrs: tuple[float, ...] = ()  # always run (e.g. the authors' default point)
    sketch: tuple[tuple[str, object], ...] = ()  # an imu_fast.SketchConfig's fields: influence in sketch space

    def settings(self) -> dict:
        return dict(self.overrides)


# Ranges chosen (on this model and data) so that each method's sweep starts where it barely changes the
# model and ends where it has forgotten heavily or collapsed, in both scenarios.
VARIANTS = {
    v.key: v
    for v in (
        Variant("imu", "IMU", "imu", (1e-3, 1e-1), extra_lrs=(0.01,)),
        # The head's per-sample gradients Kronecker-sketched (256 inputs -> 16; the 10 classes and the
        # bias kept exactly: 170 columns) and weighted with a full 170 x 170 sketch Fisher.
        Variant("imu-sketch", "IMU (sketch, full F)", "imu", (1e-3, 1e-1), extra_lrs=(0.01,),
                sketch=(("dim", 256), ("fisher", "full"), ("blocks", "all"))),
        Variant("imu-a0", "IMU (α=0)", "imu", (1e-3, 1e-1), (("alpha", 0.0),)),
        Variant("imu-uniform", "IMU-uniform", "imu-uniform", (1e-3, 1e-1)),
        Variant("imu-uniform-a0", "IMU-uniform (α=0)", "imu-uniform", (3e-3, 1.0), (("alpha", 0.0),)),
        Variant("ga", "GA", "ga", (1e-3, 3e-1)),
        Variant("npo", "NPO", "npo", (1e-3, 3e-1)),
        Variant("rl", "RL", "rl", (1e-5, 1e-2)),
        Variant("ft", "FT", "ft", (1e-3, 1.0)),
    )
}


@dataclass(frozen=True)
class StudySettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    variants: tuple[str, ...] = tuple(VARIANTS)
    lrs_per_method: int = 11
    refine_steps: int = 6  # bisection steps per (method, target)
    fixed_levels: tuple[float, ...] = (10.0, 50.0, 90.0, 99.0)  # UA targets besides Retrain's UA
    unlearn_epochs: int = 10  # the authors' default
    forget_fraction: float = 0.1
    test_fraction: float = 0.2
    width: int = 32
    train: TrainSettings = TrainSettings()  # the original recipe (its seed is replaced by each study seed)
    threads: int = 1
    cache_dir: str | None = None
    use_cache: bool = True
    quick: bool = False

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("need at least one seed")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative, got {self.seeds}")
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown or not self.scenarios:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; choose from {list(SCENARIOS)}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown or not self.variants:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(VARIANTS)}")
        if self.lrs_per_method < 1 or self.refine_steps < 0 or self.threads < 1 or self.unlearn_epochs < 1:
            raise ValueError("need lrs_per_method >= 1, refine_steps >= 0, threads >= 1, unlearn_epochs >= 1")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_grid(lo: float, hi: float, k: int, extra: tuple[float, ...] = ()) -> list[float]:
    """``k`` log-spaced learning rates from ``lo`` to ``hi`` (the geometric middle for k = 1), plus ``extra``."""
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo <= hi, got {lo}, {hi}")
    if k == 1:
        grid = [math.sqrt(lo * hi)]
    else:
        a, b = math.log10(lo), math.log10(hi)
        grid = [10 ** (a + (b - a) * i / (k - 1)) for i in range(k)]
    return sorted({_round_lr(lr) for lr in [*grid, *extra]})


def _round_lr(lr: float) -> float:
    return float(f"{lr:.4g}")


def forgotten_class(seed: int, num_classes: int = 10) -> int:
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(_CLASS_ORDER_SEED))
    return int(order[seed % num_classes])


@dataclass
class Setup:
    """Everything one (scenario, seed) cell shares."""

    scenario: str
    seed: int
    forget: TensorDataset
    retain: TensorDataset
    test: TensorDataset  # for the class scenario: the test samples of the retained classes
    forgotten_class_test: TensorDataset | None
    target_class: int | None
    original: nn.Module
    original_metrics: dict
    retrain_metrics: dict
    retrain_seconds: float
    retrain_cached: bool
    original_seconds: float
    original_cached: bool
    sizes: dict


def _cache_dir(settings: StudySettings) -> Path | None:
    if not settings.use_cache:
        return None
    return Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()


def _metrics(model: nn.Module, setup_parts: dict) -> dict:
    m = evaluate(model, setup_parts["forget"], setup_parts["retain"], setup_parts["test"])
    if setup_parts.get("fc_test") is not None:
        m["TA_forgotten_class"] = accuracy_percent(model, setup_parts["fc_test"])
    return m


def prepare(scenario: str, seed: int, settings: StudySettings, progress: bool) -> Setup:
    data = load_digits_split(seed, settings.test_fraction)
    n = len(data.y_train)
    target_class, fc_test = None, None
    x_test, y_test = data.x_test, data.y_test
    if scenario == "random":
        forget_idx, retain_idx = forget_retain_split(n, settings.forget_fraction, seed)
    else:
        target_class = forgotten_class(seed, data.num_classes)
        forget_idx = (data.y_train == target_class).nonzero().flatten()
        retain_idx = (data.y_train != target_class).nonzero().flatten()
        in_class = data.y_test == target_class
        fc_test = TensorDataset(x_test[in_class], y_test[in_class])
        x_test, y_test = x_test[~in_class], y_test[~in_class]
    parts = {
        "forget": TensorDataset(data.x_train[forget_idx], data.y_train[forget_idx]),
        "retain": TensorDataset(data.x_train[retain_idx], data.y_train[retain_idx]),
        "test": TensorDataset(x_test, y_test),
        "fc_test": fc_test,
    }
    train = dataclasses.replace(settings.train, seed=seed)
    # The same recipe dictionary as ``imu-fast demo``, so both share cached models.
    recipe = {"model": "DigitsCNN", "width": settings.width, "init_seed": seed}
    cache = _cache_dir(settings)

    def build() -> nn.Module:
        return digits_cnn(seed, data.num_classes, settings.width)

    original = trained_model("original", build, recipe, data.x_train, data.y_train, train, cache, progress)
    retrained = trained_model("retrain", build, recipe, *parts["retain"].tensors, train, cache, progress)
    return Setup(
        scenario=scenario, seed=seed, forget=parts["forget"], retain=parts["retain"], test=parts["test"],
        forgotten_class_test=fc_test, target_class=target_class, original=original.model,
        original_metrics=_metrics(original.model, parts), retrain_metrics=_metrics(retrained.model, parts),
        retrain_seconds=retrained.seconds, retrain_cached=retrained.cached, original_seconds=original.seconds,
        original_cached=original.cached,
        sizes={"train": n, "forget": len(forget_idx), "retain": len(retain_idx), "test": len(y_test),
               "forgotten_class_test": len(fc_test) if fc_test is not None else 0},
    )


def _parts(setup: Setup) -> dict:
    return {"forget": setup.forget, "retain": setup.retain, "test": setup.test, "fc_test": setup.forgotten_class_test}


def _finite_model(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters()) and all(
        torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


def run_one(setup: Setup, variant: Variant, lr: float, settings: StudySettings, phase: str) -> dict:
    """Unlearns a copy of the original model with one method at one learning rate and evaluates it."""
    model = copy.deepcopy(setup.original)
    overrides = {**variant.settings(), "lr": lr, "epochs": settings.unlearn_epochs, "seed": setup.seed}
    kwargs = {"retain": setup.retain} if variant.method == "ft" else {}
    if variant.sketch:
        kwargs["sketch"] = imu_fast.SketchConfig(**dict(variant.sketch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. NothingToUnlearnWarning: recorded through the report below
        report = unlearn(model, setup.forget, method=variant.method, **overrides, **kwargs)
    metrics, gap, error = None, None, ""
    if _finite_model(model):
        try:
            metrics = _metrics(model, _parts(setup))
            gap = avg_gap(metrics, setup.retrain_metrics)
        except (ValueError, RuntimeError) as exc:  # e.g. non-finite logits from a blown-up model
            metrics, error = None, f"evaluation failed: {exc}"
    else:
        error = "the model's parameters became non-finite"
    return {
        "scenario": setup.scenario, "seed": setup.seed, "variant": variant.key, "label": variant.label,
        "method": variant.method, "lr": lr, "phase": phase, "settings": overrides, "config": report.config,
        "metrics": metrics, "avg_gap": gap,
        "influence_seconds": report.influence_seconds, "update_seconds": report.update_seconds,
        "n_kept": report.n_kept, "n_forget": report.n_forget, "diverged": report.diverged,
        "message": "; ".join(m for m in (report.message, error) if m),
    }


def curve(runs: list[dict], original_metrics: dict) -> list[tuple[float, dict]]:
    """``(lr, metrics)`` in learning-rate order, starting with the original model at lr 0; failed runs left out."""
    points = sorted(((r["lr"], r["metrics"]) for r in runs if r["metrics"] is not None), key=lambda p: p[0])
    return [(0.0, original_metrics), *points]


def next_bisection_lr(points: list[tuple[float, dict]], target: float, lowest_ratio: float,
                      min_ratio: float = 1.002, min_jump: float = 0.0) -> float | None:
    """The learning rate that halves (in log space) the bracket of the first crossing of UA = ``target``.

    None when the curve never reaches ``target``, the original model already does, or the bracket
    is already narrower than ``min_ratio`` or than ``min_jump`` UA points. When the first run
    already passes the target, the next try is ``lowest_ratio`` times below it. An exact hit is
    refined too: a smaller learning rate may reach the same UA with less damage.
    """
    for i, (lr, m) in enumerate(points):
        if m["UA"] >= target:
            if i == 0:
                return None
            lo_lr, lo_m = points[i - 1]
            if m["UA"] - lo_m["UA"] <= min_jump:
                return None
            if lo_lr == 0:
                return _round_lr(lr / lowest_ratio)
            if lr / lo_lr < min_ratio:
                return None
            return float(math.sqrt(lo_lr * lr))
    return None


def cell_targets(setup: Setup, settings: StudySettings) -> list[float]:
    """UA targets the curves are refined around: Retrain's UA first, then the fixed levels."""
    targets = [setup.retrain_metrics["UA"]]
    for level in settings.fixed_levels:
        if all(abs(level - t) > 1e-9 for t in targets):
            targets.append(level)
    return targets


def run_cell(setup: Setup, settings: StudySettings, bar) -> list[dict]:
    runs: list[dict] = []
    # One UA step (one forget sample) is the finest resolution there is.
    ua_step = 100.0 / len(setup.forget)
    for key in settings.variants:
        variant = VARIANTS[key]
        lrs = lr_grid(*variant.lr_range, settings.lrs_per_method, variant.extra_lrs)
        mine: list[dict] = []
        for lr in lrs:
            bar.set_postfix_str(f"{setup.scenario} seed {setup.seed} {key} lr {lr:.3g}")
            mine.append(run_one(setup, variant, lr, settings, "sweep"))
            bar.update(1)
        grid_ratio = lrs[-1] / lrs[0] if len(lrs) > 1 else 10.0
        lowest_ratio = grid_ratio ** (1 / max(len(lrs) - 1, 1))
        for target in cell_targets(setup, settings):
            for _ in range(settings.refine_steps):
                lr = next_bisection_lr(curve(mine, setup.original_metrics), target, lowest_ratio,
                                       min_jump=ua_step + 1e-9)
                if lr is None or any(abs(r["lr"] - lr) <= 1e-12 * lr for r in mine):
                    break
                bar.set_postfix_str(f"{setup.scenario} seed {setup.seed} {key} refine lr {lr:.4g}")
                bar.total += 1
                mine.append(run_one(setup, variant, lr, settings, "refine"))
                bar.update(1)
        runs.extend(mine)
    return runs


def _reference_runs(setup: Setup, settings: StudySettings) -> list[dict]:
    train = dataclasses.replace(settings.train, seed=setup.seed).as_dict()
    base = {"scenario": setup.scenario, "seed": setup.seed, "lr": settings.train.lr, "phase": "reference",
            "settings": train, "config": train, "influence_seconds": 0.0, "n_kept": 0,
            "n_forget": len(setup.forget), "diverged": False}
    head = {"scenario": setup.scenario, "seed": setup.seed}
    return [
        {**head, "variant": "original", "label": "Original", "method": "original", **base,
         "metrics": setup.original_metrics,
         "avg_gap": avg_gap(setup.original_metrics, setup.retrain_metrics), "update_seconds": setup.original_seconds,
         "message": "trained on the whole training split (update_seconds = its training time)" +
                    (" (loaded from the cache; time measured when trained)" if setup.original_cached else "")},
        {**head, "variant": "retrain", "label": "Retrain", "method": "retrain", **base,
         "metrics": setup.retrain_metrics,
         "avg_gap": 0.0, "update_seconds": setup.retrain_seconds,
         "message": "trained from scratch on D_r with the original recipe" +
                    (" (loaded from the cache; time measured when trained)" if setup.retrain_cached else "")},
    ]


def run_study(settings: StudySettings, progress: bool = True,
              on_cell: Callable[[Setup], None] | None = None) -> dict:
    """Runs every (scenario, seed) cell; returns the results that ``runs.json`` stores."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    cells, runs = [], []
    try:
        per_cell = sum(len(lr_grid(*VARIANTS[k].lr_range, settings.lrs_per_method, VARIANTS[k].extra_lrs))
                       for k in settings.variants)
        total = per_cell * len(settings.seeds) * len(settings.scenarios)
        with tqdm(total=total, desc="vision study", unit="run", disable=not progress) as bar:
            for scenario in settings.scenarios:
                for seed in settings.seeds:
                    setup = prepare(scenario, seed, settings, progress)
                    if on_cell is not None:
                        on_cell(setup)
                    cell_runs = run_cell(setup, settings, bar)
                    runs.extend(_reference_runs(setup, settings) + cell_runs)
                    cells.append({
                        "scenario": scenario, "seed": seed, "target_class": setup.target_class,
                        "sizes": setup.sizes, "original": setup.original_metrics,
                        "retrain": setup.retrain_metrics, "retrain_seconds": setup.retrain_seconds,
                        "retrain_cached": setup.retrain_cached, "targets": cell_targets(setup, settings),
                    })
    finally:
        torch.set_num_threads(threads)
    return {
        "study": "vision",
        "settings": settings.as_dict(),
        "scenarios": {k: SCENARIOS[k] for k in settings.scenarios},
        "variants": {k: {"label": VARIANTS[k].label, "method": VARIANTS[k].method,
                         "overrides": VARIANTS[k].settings(), "lr_range": list(VARIANTS[k].lr_range),
                         "lrs": lr_grid(*VARIANTS[k].lr_range, settings.lrs_per_method, VARIANTS[k].extra_lrs)}
                     for k in settings.variants},
        "metric_keys": list(METRIC_KEYS),
        "cells": cells,
        "runs": runs,
        "environment": {"torch": torch.__version__, "imu_fast": imu_fast.__version__,
                        "python": platform.python_version(), "machine": platform.machine(),
                        "cpu_threads": settings.threads},
        "wall_seconds": time.perf_counter() - started,
    }
