"""IMU as a method of open-unlearning (locuslab/open-unlearning).

Register it with one line at the end of open-unlearning's ``src/trainer/__init__.py``::

    from imu_fast.integrations.open_unlearning import IMU; _register_trainer(IMU)

and copy ``config_path()`` (``IMU.yaml``) to its ``configs/trainer/``; then ``trainer=IMU`` selects it.
The class is built from open-unlearning's ``UnlearnTrainer`` when first accessed, so this module
imports without open-unlearning; accessing ``IMU`` where open-unlearning's ``trainer`` package is
not importable is an ImportError saying so.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMU", "config_path"]


def config_path() -> Path:
    """The trainer config in open-unlearning's style (``configs/trainer/IMU.yaml`` there)."""
    return Path(__file__).with_name("IMU.yaml")


def __getattr__(name: str):
    if name == "IMU":
        import importlib

        from ...extras import require

        try:
            importlib.import_module("trainer.unlearn.base")
        except ImportError as exc:
            raise ImportError("imu_fast.integrations.open_unlearning.IMU needs open-unlearning's trainer package: put "
                              "its src/ on sys.path, in its pinned environment (transformers 4.45.1, accelerate "
                              f"0.34.2, deepspeed, omegaconf) ({exc})") from exc
        require("accelerate", "hf", "imu_fast.integrations.open_unlearning.IMU")
        from .method import IMU

        globals()["IMU"] = IMU
        return IMU
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
