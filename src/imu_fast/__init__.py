"""imu_fast: influence-guided machine unlearning with fused per-sample statistics kernels."""

from .backends import backends
from .config import GA_BASELINE, IMU_PAPER, IMU_UNIFORM, PRESETS, UnlearnConfig
from .influence import InfluenceResult, influence_scores
from .influence_ref import influence_scores_ref
from .losses import imu_loss
from .methods.npo import npo_loss
from .metrics import accuracy_percent, avg_gap, evaluate, mia_efficacy
from .per_sample import fisher_diagonal, per_sample_grad_norms
from .report import UnlearnReport
from .unlearn import unlearn
from .weights import NothingToUnlearnWarning, influence_weights

__version__ = "0.1.0"

__all__ = [
    "GA_BASELINE",
    "IMU_PAPER",
    "IMU_UNIFORM",
    "PRESETS",
    "InfluenceResult",
    "NothingToUnlearnWarning",
    "UnlearnConfig",
    "UnlearnReport",
    "accuracy_percent",
    "avg_gap",
    "backends",
    "evaluate",
    "fisher_diagonal",
    "imu_loss",
    "influence_scores",
    "influence_scores_ref",
    "influence_weights",
    "mia_efficacy",
    "npo_loss",
    "per_sample_grad_norms",
    "unlearn",
]
