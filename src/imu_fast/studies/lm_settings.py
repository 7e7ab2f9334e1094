"""The settings of the language-model study (``studies.lm`` and its trainer variant ``studies.lm_trainer``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lm_model import FinetuneSettings


@dataclass(frozen=True)
class MethodSpec:
    """One unlearning method of the study: ``imu_fast.unlearn(method=..., **settings)`` at each lr."""

    key: str  # short id used in runs.json
    label: str  # shown in tables and plots
    method: str  # imu_fast.unlearn's method
    lrs: tuple[float, ...]
    settings: dict = field(default_factory=dict)  # further unlearn() settings
    uses_targets: bool = False  # passes targets= (the q/k/v/o influence parameters)


def _finetune_settings(**kw):
    from .lm_model import FinetuneSettings

    return FinetuneSettings(**kw)


@dataclass(frozen=True)
class StudySettings:
    mode: str = "full"  # full | quick | tiny
    model: str = "smollm2-135m"  # smollm2-135m | tiny-llama
    n_people: int = 80
    n_heldout: int = 24
    forget_fraction: float = 0.1
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1)  # forget-set draws (and shuffling of the unlearning runs)
    ppl_chunks: int = 16
    ppl_chunk_len: int = 128
    finetune: FinetuneSettings = field(default_factory=_finetune_settings)
    unlearn_epochs: int = 5
    unlearn_batch: int = 8
    imu_layers: tuple[int, ...] | None = None  # None: chosen by layer_rule
    layer_rule: str = "quarters"  # quarters: a quarter, half and three quarters of the depth; authors: see lm_trainer
    runner: str = "unlearn"  # unlearn: imu_fast.unlearn (SGD); trainer: a Hugging Face Trainer (lm_trainer)
    methods: tuple[MethodSpec, ...] = ()
    eval_batch: int = 32

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["methods"] = [dataclasses.asdict(m) for m in self.methods]
        return d
