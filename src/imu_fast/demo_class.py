"""The demo's second scenario: forget one whole class of the digits.

GA and IMU each start from the demo's original model and stop as soon as their forget accuracy
falls to the same target (``StopCriteria``, checked after every step on the forget set alone, so
neither method reads retain data); then what each kept is measured: accuracy on the retain set
(the other classes' training samples) and on the test samples of the other classes. The depth
each reached is shown beside it, since a step can overshoot the target.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from . import checks
from .models import accuracy
from .stop import StopCriteria
from .unlearning import unlearn

METHODS = (("GA", "ga"), ("IMU", "imu"))


@dataclass(frozen=True)
class ClassForgetting:
    """How the class-forgetting scenario runs (each method otherwise uses its preset)."""

    target_accuracy: float = 0.1  # stop once at most this fraction of the forgotten class is recognised
    batch_size: int = 32  # small batches, so that the stop check can act between small steps
    max_steps: int = 200  # a budget, so that a method that never reaches the target still ends
    epochs: int = 50

    def __post_init__(self):
        where = "ClassForgetting"
        checks.real("target_accuracy", self.target_accuracy, low=0, high=1, where=where)
        for name in ("batch_size", "max_steps", "epochs"):
            checks.integer(name, getattr(self, name), low=1, where=where)


def forgotten_class(seed: int, num_classes: int) -> int:
    return int(torch.randint(num_classes, (), generator=torch.Generator().manual_seed(seed)))


def run_class_forgetting(original: nn.Module, data, seed: int, settings: ClassForgetting = ClassForgetting(),
                         progress: bool = False) -> dict:
    """Forget-class results: ``{"class", "sizes", "target_accuracy", "rows"}``; accuracies are fractions."""
    c = forgotten_class(seed, data.num_classes)
    chosen, test_chosen = data.y_train == c, data.y_test == c
    parts = {"forget": (data.x_train[chosen], data.y_train[chosen]), "retain": (data.x_train[~chosen], data.y_train[~chosen]),
             "test": (data.x_test[~test_chosen], data.y_test[~test_chosen]),
             "test_class": (data.x_test[test_chosen], data.y_test[test_chosen])}

    def row(name: str, model: nn.Module, **fields) -> dict:
        return {"name": name, **{f"{part}_acc": accuracy(model, *xy) for part, xy in parts.items()}, **fields}

    rows = [row("Original", original)]
    stop = StopCriteria(forget_accuracy_at_most=settings.target_accuracy, max_steps=settings.max_steps)
    for name, method in METHODS:
        model = copy.deepcopy(original)
        report = unlearn(model, parts["forget"], method=method, epochs=settings.epochs, batch_size=settings.batch_size,
                         stop=stop, seed=seed, progress=progress)
        reached = report.final_forget.get("forget_accuracy", 1.0) <= settings.target_accuracy
        rows.append(row(name, model, steps=report.steps, reached=reached, stopped_by=report.stopped_by,
                        influence_seconds=report.influence_seconds, unlearn_seconds=report.update_seconds))
    return {"class": c, "sizes": {k: len(v[1]) for k, v in parts.items()}, "settings": dataclasses.asdict(settings),
            "rows": rows}


COLUMNS = ("method", "forget acc", "retain acc", "test acc (other classes)", "test acc (class)", "steps")


def format_class_table(result: dict) -> str:
    def cells(r: dict) -> list[str]:
        steps = "-" if "steps" not in r else f"{r['steps']}{'' if r['reached'] else ' (target not reached)'}"
        return [r["name"], *(f"{100 * r[k]:.1f}%" for k in ("forget_acc", "retain_acc", "test_acc", "test_class_acc")),
                steps]

    body = [list(COLUMNS)] + [cells(r) for r in result["rows"]]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s, sizes = result["settings"], result["sizes"]
    return "\n".join([
        f"Whole-class forgetting: class {result['class']} ({sizes['forget']} training samples); GA and IMU each "
        f"stopped once its forget accuracy is <= {100 * s['target_accuracy']:.0f}% (checked on the forget set after "
        f"every step, batch {s['batch_size']}, at most {s['max_steps']} steps)",
        "", *lines, "",
        "retain acc: the other classes' training samples; test acc: test samples of the other classes / of the "
        "forgotten class. At the same forgetting depth, higher retain and test accuracy is better.",
    ])
