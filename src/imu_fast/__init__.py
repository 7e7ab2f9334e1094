"""imu_fast: influence-guided machine unlearning with fused per-sample statistics kernels.

The public names are loaded on first use, so ``import imu_fast`` (and ``imu-fast --help``) does not
import torch until something that needs it is touched.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "GA_BASELINE": "config",
    "IMU_PAPER": "config",
    "IMU_UNIFORM": "config",
    "PRESETS": "config",
    "UnlearnConfig": "config",
    "StopCriteria": "stop",
    "Stage": "stages",
    "StageMismatchError": "stages",
    "load_stage": "stages",
    "save_stage": "stages",
    "InfluenceResult": "influence",
    "influence_scores": "influence",
    "influence_scores_ref": "influence",
    "sketch_influence": "influence",
    "SketchConfig": "sketch",
    "SketchSet": "sketch",
    "gradient_sketches": "sketch",
    "NothingToUnlearnWarning": "weights",
    "influence_weights": "weights",
    "UnlearnReport": "report",
    "backends": "dispatch",
    "accuracy_percent": "metrics",
    "avg_gap": "metrics",
    "evaluate": "metrics",
    "mia_efficacy": "metrics",
    "fisher_diagonal": "statistics",
    "per_sample_grad_norms": "statistics",
    "imu_loss": "losses",
    "npo_loss": "methods.npo",
    "unlearn": "unlearning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'imu_fast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
