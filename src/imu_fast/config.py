"""Settings of an unlearning run, with the authors' defaults and named presets (IMU_SPEC.md section 3)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from . import checks

OPTIMIZERS = ("sgd", "adamw")  # SGD: the authors' vision recipe; AdamW: their language-model runs
REFRESH_MODES = ("once", "epoch", "batch")
WEIGHTINGS = ("influence", "uniform")
SCOPES = ("head", "all")
BACKEND_NAMES = ("auto", "torch", "cpu", "triton", "cuda")  # as imu_fast.dispatch.BACKENDS, without importing torch


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run. Defaults are the authors' vision recipe for IMU."""

    epochs: int = 10
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4  # SGD: L2 added to the gradient; AdamW: decoupled decay
    betas: tuple = (0.9, 0.999)  # AdamW only
    eps: float = 1e-8  # AdamW only
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
        where = "UnlearnConfig"
        if isinstance(self.betas, list):  # the JSON form
            object.__setattr__(self, "betas", tuple(self.betas))
        self._check_optimizer(where)
        for name in ("epochs", "batch_size", "seed"):
            checks.integer(name, getattr(self, name), low=1 if name == "batch_size" else 0, where=where)
        checks.real("lr", self.lr, low=0, low_open=True, where=where)
        checks.real("momentum", self.momentum, low=0, high=1, high_open=True, where=where)
        for name in ("weight_decay", "alpha", "damping"):
            checks.real(name, getattr(self, name), low=0, where=where)
        checks.real("top_fraction", self.top_fraction, low=0, high=1, low_open=True, where=where)
        checks.real("clip_quantile", self.clip_quantile, low=0, high=1, where=where)
        checks.real("npo_beta", self.npo_beta, low=0, low_open=True, where=where)
        checks.choice("refresh", self.refresh, REFRESH_MODES, where=where)
        checks.choice("weighting", self.weighting, WEIGHTINGS, where=where)
        checks.choice("scope", self.scope, SCOPES, where=where)
        checks.choice("backend", self.backend, BACKEND_NAMES, where=where)
        for name in ("freeze_batchnorm", "progress"):
            checks.flag(name, getattr(self, name), where=where)
        if self.refresh != "once" and self.weighting == "uniform":
            raise ValueError(f"{where}: refresh applies to influence weighting only")

    def _check_optimizer(self, where: str) -> None:
        checks.choice("optimizer", self.optimizer, OPTIMIZERS, where=where)
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise TypeError(f"{where}: betas must be a pair (beta1, beta2), got {self.betas!r}")
        for name, beta in zip(("betas[0]", "betas[1]"), self.betas):
            checks.real(name, beta, low=0, high=1, high_open=True, where=where)
        checks.real("eps", self.eps, low=0, low_open=True, where=where)
        # A setting the chosen optimiser does not read is refused rather than silently ignored.
        defaults = UnlearnConfig.__dataclass_fields__
        unused = ("betas", "eps") if self.optimizer == "sgd" else ("momentum",)
        changed = [f"{name}={getattr(self, name)!r}" for name in unused if getattr(self, name) != defaults[name].default]
        if changed:
            raise ValueError(f"{where}: optimizer={self.optimizer!r} does not use {', '.join(changed)}")

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
