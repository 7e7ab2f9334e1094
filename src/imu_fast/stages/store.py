"""``save_stage`` / ``load_stage``: any expensive result, reusable only by the run it belongs to.

A stage is a ``kind`` (``"influence"``, ``"fisher"``, ``"weights"``, ``"sketch"``, ...), a dict of
tensors, the settings that produced it (JSON values), and fingerprints of the model and forget set
it was computed from. Loading compares all three with the caller's; any difference refuses reuse
with a ``StageMismatchError`` that lists what differs. Inside a process group every process
fingerprints its share, process 0 writes, and every process may read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..forget_set import as_forget_set
from .files import read_stage_files, stage_exists, write_stage_files
from .fingerprint import forget_differences, forget_fingerprint, model_differences, model_fingerprint


class StageMismatchError(ValueError):
    """A saved stage belongs to another model, forget set or settings; ``differences`` lists them."""

    def __init__(self, path: Path, differences: list[str]):
        self.path = path
        self.differences = differences
        super().__init__(f"the saved stage {path} was computed differently, so it is not reused: "
                         + "; ".join(differences)
                         + f". Use another directory, or delete {path.name} to recompute")


@dataclass
class Stage:
    kind: str
    tensors: dict[str, torch.Tensor]
    settings: dict
    info: dict = field(default_factory=dict)
    path: Path | None = None


def _canonical(settings: dict) -> dict:
    try:
        return json.loads(json.dumps(settings, sort_keys=True))
    except TypeError as exc:
        raise TypeError(f"stage settings must be JSON values (numbers, strings, lists, dicts): {exc}") from None


def _fingerprints(model: nn.Module | None, forget) -> dict:
    prints = {}
    if model is not None:
        prints["model"] = model_fingerprint(distributed.unwrap(model))
    if forget is not None:
        prints["forget"] = forget_fingerprint(as_forget_set(forget))
    return prints


def save_stage(directory, kind: str, tensors: dict[str, torch.Tensor], *, settings: dict,
               model: nn.Module | None = None, forget=None, info: dict | None = None) -> Path:
    """Saves stage ``kind`` in ``directory`` (replacing an older one atomically); returns its JSON path.
    ``model`` and ``forget`` (any accepted form) are fingerprinted; ``info`` is kept but not compared."""
    prints = _fingerprints(model, forget)
    header = {"settings": _canonical(settings), "fingerprints": prints, "info": _canonical(info or {})}
    path = Path(directory) / f"{kind}.json"
    with distributed.together(f"saving the {kind!r} stage"):
        if distributed.rank() == 0:
            path = write_stage_files(directory, kind, tensors, header)
    return path


def compare(header: dict, settings: dict, prints: dict) -> list[str]:
    """What differs between a saved stage's header and the caller's settings and fingerprints."""
    differences = []
    saved = header.get("settings", {})
    settings = _canonical(settings)
    for key in sorted(set(saved) | set(settings)):
        if saved.get(key) != settings.get(key):
            differences.append(f"{key}: {saved.get(key, '(unset)')!r} saved, {settings.get(key, '(unset)')!r} now")
    saved_prints = header.get("fingerprints", {})
    for key, now in prints.items():  # "model", or a data set by what it is ("forget", "retain")
        saved_print = saved_prints.get(key, {})
        differences += model_differences(saved_print, now) if key == "model" else forget_differences(saved_print, now, key)
    return differences


def load_stage(directory, kind: str, *, settings: dict, model: nn.Module | None = None, forget=None) -> Stage:
    """The saved stage ``kind`` of ``directory`` if it was computed with these ``settings`` from this
    ``model`` and ``forget`` set (those given); otherwise ``StageMismatchError`` naming what differs.
    A missing stage is ``FileNotFoundError``."""
    header, tensors = read_stage_files(directory, kind)
    path = Path(directory) / f"{kind}.json"
    differences = compare(header, settings, _fingerprints(model, forget))
    if differences:
        raise StageMismatchError(path, differences)
    return Stage(kind, tensors, header.get("settings", {}), header.get("info", {}), path)


__all__ = ["Stage", "StageMismatchError", "compare", "load_stage", "save_stage", "stage_exists"]
