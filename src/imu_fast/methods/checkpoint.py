"""Checkpoints of an unlearning run (``unlearn(..., checkpoint_dir=...)``).

A checkpoint is a saved stage (``imu_fast.stages``: safetensors plus JSON, replaced atomically)
holding what the rest of the run depends on: the trained parameters and every buffer, the
optimiser's state, the method's state (weights, scores, NPO's reference), the report so far,
where the loop stands, and the random states — torch's (CPU and CUDA), Python's, NumPy's and the
shuffling generator's — both now and as they were when the current epoch's first batch was drawn,
so that a run resumed in the middle of an epoch replays that epoch's order and data exactly.

It also holds the run's settings and fingerprints of the model as it was before unlearning and of
the data; a checkpoint of another run (other settings, model or data) is refused, naming what
differs. Inside a process group process 0 writes and every process reads.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..report import UnlearnReport
from ..stages import StageMismatchError, read_stage_files, stage_exists, write_stage_files
from ..stages.store import compare
from .common import parameter_names

KIND = "checkpoint"
# Report fields a checkpoint carries (weights and scores travel as tensors).
REPORT_FIELDS = ("epoch_objective", "epoch_forget_loss", "influence_seconds", "update_seconds", "n_kept", "diverged",
                 "message", "steps", "stopped_by", "final_forget")


@dataclass
class Progress:
    """Where the loop stands."""

    epoch: int = 0
    batch: int = 0  # batches taken from the current epoch's order
    steps: int = 0  # optimiser steps of the whole run
    objective: float = 0.0  # sums over the current epoch's batches so far
    forget_loss: float = 0.0
    batches: int = 0
    forget_batches: int = 0
    finished: bool = False


def rng_state(generator: torch.Generator) -> tuple[dict, dict]:
    """``(tensors, json values)`` of every random state a run touches."""
    tensors = {"cpu": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    values = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss]}
    return tensors, values


def set_rng_state(tensors: dict, values: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["cpu"])
    generator.set_state(tensors["shuffle"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k[5:]))]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


class Checkpoints:
    """The checkpoints of one run in ``directory``: written every ``every`` batches, at each epoch's
    end and when the run ends."""

    def __init__(self, directory, every: int, settings: dict, fingerprints: dict):
        self.directory = Path(directory)
        self.every = every
        self.settings = settings
        self.fingerprints = fingerprints
        self.saved: tuple[dict, dict] | None = None  # (header, tensors) of the checkpoint resumed from

    def load(self) -> bool:
        """Reads the directory's checkpoint, if any (True); refuses one of another run."""
        if not stage_exists(self.directory, KIND):
            return False
        header, tensors = read_stage_files(self.directory, KIND)
        differences = compare(header, self.settings, self.fingerprints)
        if differences:
            raise StageMismatchError(self.directory / f"{KIND}.json", [
                "the checkpoint belongs to another run"] + differences)
        self.saved = (header, tensors)
        return True

    def save(self, *, model: nn.Module, trained: list[nn.Parameter], optimizer, generator: torch.Generator,
             progress: Progress, epoch_rng: tuple[dict, dict], objective_state: dict, report: UnlearnReport) -> None:
        now_tensors, now_values = rng_state(generator)
        tensors = {
            **_prefixed("param", dict(zip(parameter_names(model, trained), trained))),
            **_prefixed("buffer", dict(model.named_buffers())),
            **_prefixed("rng", now_tensors),
            **_prefixed("epoch_rng", epoch_rng[0]),
            **_prefixed("objective", objective_state),
        }
        optimizer_values = {}
        for index, entries in optimizer.state_dict()["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{key}"] = value
                else:
                    optimizer_values[f"{index}/{key}"] = value
        for name in ("weights", "scores"):
            if getattr(report, name) is not None:
                tensors[f"report/{name}"] = getattr(report, name)
        header = {
            "settings": self.settings,
            "fingerprints": self.fingerprints,
            "progress": dataclasses.asdict(progress),
            "report": {name: getattr(report, name) for name in REPORT_FIELDS},
            "optimizer": optimizer_values,
            "rng": now_values,
            "epoch_rng": epoch_rng[1],
        }
        with distributed.together("writing the checkpoint"):
            if distributed.rank() == 0:
                write_stage_files(self.directory, KIND, tensors, header)

    # -- resuming ------------------------------------------------------------------------------

    def restore(self, *, model: nn.Module, trained: list[nn.Parameter], optimizer, report: UnlearnReport
                ) -> tuple[Progress, dict]:
        """Puts the saved model, optimiser and report in place; returns the progress and the method's state."""
        header, tensors = self.saved
        params = _unprefixed("param", tensors)
        names = parameter_names(model, trained)
        buffers = dict(model.named_buffers())
        saved_buffers = _unprefixed("buffer", tensors)
        if sorted(params) != sorted(names) or sorted(saved_buffers) != sorted(buffers):
            raise ValueError(f"the checkpoint in {self.directory} holds other parameters or buffers than this run trains")
        with torch.no_grad():
            for name, p in zip(names, trained):
                p.copy_(params[name])
            for name, b in buffers.items():
                b.copy_(saved_buffers[name])
        state: dict = {}
        for key, value in _unprefixed("optimizer", tensors).items():
            index, entry = key.split("/", 1)
            state.setdefault(int(index), {})[entry] = value
        for key, value in header["optimizer"].items():
            index, entry = key.split("/", 1)
            state.setdefault(int(index), {})[entry] = value
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
        for name, value in header["report"].items():
            setattr(report, name, value)
        for name in ("weights", "scores"):
            if f"report/{name}" in tensors:
                setattr(report, name, tensors[f"report/{name}"])
        report.resumed_from_step = header["progress"]["steps"]
        return Progress(**header["progress"]), _unprefixed("objective", tensors)

    def rng(self, which: str) -> tuple[dict, dict]:
        """The saved random states: ``"rng"`` (when saved) or ``"epoch_rng"`` (the epoch's start)."""
        header, tensors = self.saved
        return _unprefixed(which, tensors), header[which]
