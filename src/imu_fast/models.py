"""A small CNN for the 8x8 digits, how to train it, and how to measure its accuracy.

The network ends in one ``nn.Linear`` whose output ``forward`` returns unchanged: that is how
``imu_fast`` finds the classifier head whose influence it computes (see ``imu_fast.capture.head``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .modes import preserved_modes


class DigitsCNN(nn.Module):
    """Two conv-BN-ReLU-pool stages (8x8 -> 4x4 -> 2x2), then a linear head on 2*2*``width*2`` features."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        if num_classes < 2 or width < 1:
            raise ValueError(f"need num_classes >= 2 and width >= 1, got {num_classes} and {width}")
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # the head's output, unchanged: imu_fast finds it by identity


def digits_cnn(seed: int = 0, num_classes: int = 10, width: int = 32) -> DigitsCNN:
    """A freshly initialised :class:`DigitsCNN`; the same seed gives the same weights.

    The seed is applied inside a forked RNG so the caller's global torch RNG is left alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsCNN(num_classes, width)


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_classifier` trains (Adam, cross-entropy, shuffled mini-batches)."""

    epochs: int = 15
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0  # shuffling order (model initialisation is seeded where the model is built)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainSettings: {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"TrainSettings: need lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need as many labels as inputs (and at least one), got {x.shape[0]} inputs and {y.shape[0]} labels")


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings = TrainSettings(),
                     *, progress: bool = False, desc: str = "training") -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with Adam and return it, in eval mode.

    Mini-batches are shuffled by a generator seeded with ``settings.seed``, so a seeded model
    trained with the same settings on the same data ends with the same weights (on one machine).
    """
    _check_data(x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    n = x.shape[0]
    model.train()
    for _ in tqdm(range(settings.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            if idx.numel() == 1 and n > 1:
                continue  # BatchNorm cannot train on a batch of one; that sample is seen next epoch
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y``, in eval mode; the model's modes are restored after."""
    _check_data(x, y)
    correct = 0
    with preserved_modes(model):
        model.eval()
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    return correct / x.shape[0]
