"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes) as torch tensors.

The images ship inside scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded.
Pixel values there are integers 0..16; we scale them to [0, 1] and add a channel axis so the
tensors look like any other image batch: ``(N, 1, 8, 8)`` float32, labels int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..extras import require

NUM_CLASSES = 10
_MAX_PIXEL = 16.0  # load_digits stores 4-bit grey levels


@dataclass(frozen=True)
class DigitsSplit:
    """A stratified train/test split of the digits."""

    x_train: torch.Tensor  # (N_train, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor  # (N_train,) int64 in [0, 10)
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def load_digits_split(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """The digits, split into train and test sets with the same class proportions.

    The split depends only on ``seed``; the same seed gives the same split on every machine.
    """
    # Imported here: sklearn.datasets is slow to import and only this function needs it.
    load_digits = require("sklearn.datasets", "eval", "the handwritten digits").load_digits
    train_test_split = require("sklearn.model_selection", "eval", "the handwritten digits").train_test_split

    _check_fraction("test_fraction", test_fraction)
    images, labels = load_digits(return_X_y=True)
    images = (images / _MAX_PIXEL).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return DigitsSplit(
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr).long(),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te).long(),
    )


def forget_retain_split(n_train: int, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(forget_idx, retain_idx)``: a seeded random ``fraction`` of ``range(n_train)`` and the rest.

    Random sample-wise forgetting, the first scenario of the evaluation protocol (IMU_SPEC.md
    section 5). The forget set has ``round(fraction * n_train)`` samples (at least 1, and at least
    one sample is retained). Both index tensors are sorted, disjoint, and cover ``range(n_train)``.
    """
    if n_train < 2:
        raise ValueError(f"need at least 2 training samples to split into forget and retain sets, got {n_train}")
    _check_fraction("forget fraction", fraction)
    n_forget = min(max(1, round(fraction * n_train)), n_train - 1)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    forget, retain = order[:n_forget], order[n_forget:]
    return forget.sort().values, retain.sort().values
