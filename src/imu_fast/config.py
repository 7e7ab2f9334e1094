"""Settings of an unlearning run, with the authors' defaults and named presets (IMU_SPEC.md section 3)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

REFRESH_MODES = ("once", "epoch", "batch")
WEIGHTINGS = ("influence", "uniform")
SCOPES = ("head", "all")


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run. Defaults are the authors' vision recipe for IMU."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    alpha: float = 0.2  # L1 penalty on the head's parameters
    damping: float = 0.01  # lambda added to the Fisher diagonal
    top_fraction: float = 0.1  # share of negative-influence samples kept
    clip_quantile: float = 0.93
    refresh: str = "once"  # when weights are recomputed: once | epoch | batch (dynamic variant)
    weighting: str = "influence"  # influence | uniform (uniform = the ablation / plain GA)
    scope: str = "head"  # parameters updated: head | all
    freeze_batchnorm: bool = False  # True keeps BatchNorm running statistics fixed during updates
    npo_beta: float = 0.1  # NPO's inverse temperature beta (method "npo" only)
    seed: int = 0
    backend: str = "auto"
    progress: bool = False

    def __post_init__(self):
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"UnlearnConfig: {msg}")

        need(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        need(self.damping >= 0, f"damping must be >= 0, got {self.damping}")
        need(0 < self.top_fraction <= 1, f"top_fraction must be in (0, 1], got {self.top_fraction}")
        need(0 <= self.clip_quantile <= 1, f"clip_quantile must be in [0, 1], got {self.clip_quantile}")
        need(self.refresh in REFRESH_MODES, f"refresh must be one of {REFRESH_MODES}, got {self.refresh!r}")
        need(self.weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        need(self.scope in SCOPES, f"scope must be one of {SCOPES}, got {self.scope!r}")
        need(self.npo_beta > 0, f"npo_beta must be > 0, got {self.npo_beta}")
        need(not (self.refresh != "once" and self.weighting == "uniform"), "refresh applies to influence weighting only")

    def replace(self, **changes) -> "UnlearnConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown unlearning settings: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "UnlearnConfig":
        return cls(**json.loads(text))


# The paper's recipe: head-only gradient ascent weighted by influence.
IMU_PAPER = UnlearnConfig()
# Standard gradient-ascent baseline: all parameters, uniform weights, same optimiser settings.
GA_BASELINE = UnlearnConfig(scope="all", weighting="uniform", alpha=0.0)
# Ablation that isolates the influence weighting: IMU's head-only loop with uniform weights.
IMU_UNIFORM = UnlearnConfig(weighting="uniform")

# The other baselines (IMU_SPEC section 5) share GA's optimiser settings: all parameters, SGD, no L1
# term. Retain-free: NPO and random labels (RL); retain-using references: fine-tuning on D_r (FT) and
# Retrain (for Retrain, set epochs / lr to the original training recipe when comparing).
PRESETS = {
    "imu": IMU_PAPER,
    "ga": GA_BASELINE,
    "imu-uniform": IMU_UNIFORM,
    "npo": GA_BASELINE,
    "rl": GA_BASELINE,
    "ft": GA_BASELINE,
    "retrain": GA_BASELINE,
}
