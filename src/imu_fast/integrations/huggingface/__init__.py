"""IMU inside a Hugging Face ``transformers.Trainer``.

    from imu_fast.integrations.huggingface import IMUTrainer, StopCriteria

    trainer = IMUTrainer(model=model, args=TrainingArguments(...), train_dataset=forget_set)
    trainer.train()

The train dataset is the forget set; the Trainer's optimiser (AdamW by default), schedule,
gradient accumulation, mixed precision and DDP apply as they are. See ``trainer.IMUTrainer`` for
the settings. transformers is imported when a trainer class is first used, so this module
imports without it.
"""

from __future__ import annotations

from ..settings import IMUSettings, StopCriteria
from ..theta import default_layers

_LAZY = {"IMUTrainer": "trainer", "NPOTrainer": "trainer", "IMUCallback": "callback"}

__all__ = ["IMUCallback", "IMUSettings", "IMUTrainer", "NPOTrainer", "StopCriteria", "default_layers"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from ...extras import require

        require("transformers", "hf", f"imu_fast.integrations.huggingface.{name}")
        require("accelerate", "hf", f"imu_fast.integrations.huggingface.{name} (transformers' Trainer)")
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
