"""``imu-fast bench lm --trainer``: the language-model study with every method run by a Hugging Face
``Trainer`` (``imu_fast.integrations.huggingface``) in the authors' language-model recipe.

The authors' IMU for language models runs inside open-unlearning's Trainer: AdamW, open-unlearning's
trainer defaults (learning rate 1e-5, 10 epochs, linear schedule with one epoch of warm-up and
weight decay 0.01 in its TOFU experiments), influence recomputed on every batch from that batch
alone, alpha = 0.02, and only theta_c trained: q/k/v/o of three decoder layers (their layers
19-21; here the same relative depth, ``imu_fast.integrations.theta.default_layers``). GA and NPO
run under the same Trainer and schedule with every parameter trained. Everything else (data,
fine-tuned model, measurements, the matched-forgetting comparison per seed) is ``studies.lm``'s.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

from .lm_settings import MethodSpec, StudySettings, _finetune_settings

AUTHORS_LR = 1e-5


@dataclass
class TrainerReport:
    """The fields of an ``UnlearnReport`` the study records."""

    influence_seconds: float
    update_seconds: float
    n_forget: int
    n_kept: int
    epochs_run: int
    diverged: bool
    message: str
    epoch_forget_loss: list


def trainer_methods(lrs: dict[str, tuple[float, ...]]) -> tuple[MethodSpec, ...]:
    imu = dict(method="imu", uses_targets=True)
    return (
        MethodSpec("ga", "GA", "ga", lrs["ga"], {"weighting": "uniform", "scope": "all", "alpha": 0.0}),
        MethodSpec("npo", "NPO", "npo", lrs["npo"], {"beta": 0.1}),
        MethodSpec("imu-batch", "IMU (batch, α=0.02)", lrs=lrs["imu-batch"],
                   settings={"refresh": "batch", "alpha": 0.02}, **imu),
        # What the authors' code effectively runs: its L1 term is computed under no_grad.
        MethodSpec("imu-batch-a0", "IMU (batch, α=0)", lrs=lrs["imu-batch-a0"],
                   settings={"refresh": "batch", "alpha": 0.0}, **imu),
    )


def _trainer_settings(mode: str, lrs: dict, **kw) -> StudySettings:
    base = dict(mode=mode, runner="trainer", layer_rule="authors", unlearn_epochs=10, methods=trainer_methods(lrs))
    base.update(kw)
    return StudySettings(**base)


def full_settings() -> StudySettings:
    # Calibrated with the quick run (one seed): under AdamW, GA and NPO forget half the facts at the
    # authors' 1e-5 and nearly all at 4e-5; IMU, moving only 2% of the weights, forgets nothing at
    # 1e-5 and needs steps near 1e-3; with alpha = 0.02 the L1 pull dominates its gradient.
    lrs = {"ga": (AUTHORS_LR, 2e-5, 4e-5), "npo": (AUTHORS_LR, 4e-5), "imu-batch": (AUTHORS_LR, 3e-3),
           "imu-batch-a0": (3e-4, 1e-3, 3e-3)}
    return _trainer_settings("full", lrs, n_people=80, n_heldout=24, seeds=(0, 1), ppl_chunks=16,
                             finetune=_finetune_settings(epochs=8, lr=3e-4), unlearn_batch=8)


def quick_settings() -> StudySettings:
    lrs = {"ga": (AUTHORS_LR, 4e-5), "npo": (AUTHORS_LR, 4e-5), "imu-batch": (AUTHORS_LR, 3e-4),
           "imu-batch-a0": (AUTHORS_LR, 3e-4)}
    return _trainer_settings("quick", lrs, n_people=40, n_heldout=12, seeds=(0,), ppl_chunks=8,
                             finetune=_finetune_settings(epochs=8, lr=3e-4), unlearn_batch=4)


def tiny_settings() -> StudySettings:
    lrs = {"ga": (1e-2,), "npo": (1e-2,), "imu-batch": (3e-2,), "imu-batch-a0": (3e-2,)}
    return _trainer_settings("tiny", lrs, model="tiny-llama", n_people=12, n_heldout=6, forget_fraction=0.25,
                             seeds=(0,), ppl_chunks=4, ppl_chunk_len=48, unlearn_epochs=3, unlearn_batch=3,
                             finetune=_finetune_settings(epochs=30, lr=5e-3, batch_size=12, warmup_steps=5,
                                                         replay_chunks=0, freeze_embeddings=False))


def trainer_unlearn(model, forget: list[dict], spec: MethodSpec, lr: float, seed: int, settings: StudySettings,
                    targets: list[str], progress: bool, device: str) -> TrainerReport:
    """One unlearning run of ``spec`` at ``lr`` under the Trainer (AdamW, linear schedule, one epoch
    of warm-up, weight decay 0.01)."""
    from transformers import TrainingArguments

    from ..integrations.huggingface import IMUTrainer, NPOTrainer

    steps_per_epoch = -(-len(forget) // settings.unlearn_batch)
    with tempfile.TemporaryDirectory(prefix="imu-lm-trainer-") as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=settings.unlearn_batch,
                                 num_train_epochs=settings.unlearn_epochs, learning_rate=lr, weight_decay=0.01,
                                 warmup_steps=steps_per_epoch, lr_scheduler_type="linear", seed=seed,
                                 report_to="none", save_strategy="no", logging_strategy="no",
                                 disable_tqdm=not progress, use_cpu=device == "cpu")
        common = dict(model=model, args=args, train_dataset=forget)
        if spec.method == "npo":
            trainer = NPOTrainer(**common, **spec.settings)
        else:
            trainer = IMUTrainer(**common, targets=targets if spec.uses_targets else None, **spec.settings)
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    influence = getattr(trainer.objective, "influence_seconds", 0.0)
    weights = getattr(trainer.objective, "weights", None)
    kept = len(forget) if weights is None else int((weights > 0).sum())
    model.eval()
    return TrainerReport(influence_seconds=influence, update_seconds=wall - influence, n_forget=len(forget),
                         n_kept=kept, epochs_run=round(trainer.state.epoch or 0),
                         diverged=bool(trainer.stop_reason and "non-finite" in trainer.stop_reason),
                         message=trainer.stop_reason or "", epoch_forget_loss=[])


def setup_line(s: dict, m: dict) -> str:
    """The summary's description of the unlearning runs."""
    return (f"- Unlearning: a Hugging Face Trainer (`imu_fast.integrations.huggingface`), {s['unlearn_epochs']} epochs, "
            f"batch {s['unlearn_batch']}, AdamW (the Trainer's default), weight decay 0.01, linear schedule with one "
            f"epoch of warm-up, gradient clipping at norm 1 (the Trainer's default); the authors' learning rate is "
            f"{AUTHORS_LR:g} (open-unlearning's trainer default), swept upwards from there. GA (`IMUTrainer` with "
            f"uniform weights) and NPO (`NPOTrainer`, beta 0.1) train all parameters; IMU (`IMUTrainer`, influence "
            f"from every batch alone) scores and trains only theta_c = q/k/v/o of decoder layers {m['imu_layers']} "
            f"({m['imu_target_params'] / 1e6:.2f} M parameters; the authors' layers 19-21 at the same relative depth).")
