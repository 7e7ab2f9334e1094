"""RL: fine-tune on the forget set relabelled with random *wrong* labels (cross-entropy descent).

    L = mean_{i∈B} CE(f_θ(x_i), ỹ_i),   ỹ_i = (y_i + r_i) mod C,   r_i ~ U{1, …, C−1}

Each forget sample gets one random wrong label for the whole run, drawn from a generator seeded
by ``cfg.seed`` (so reruns match and the caller's RNG is untouched); r_i ≥ 1 guarantees
ỹ_i ≠ y_i. This is the retain-free form of the baseline: no retain data are mixed in.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import UnlearnConfig
from ..forget_set import ForgetSet
from ..report import UnlearnReport
from ._descent import run_descent
from .loop import RunControl


def random_wrong_labels(y: torch.Tensor, offsets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(y + offsets) mod C with every offset in [1, C): never the true label."""
    return (y + offsets) % num_classes


def run_random_labels(model: nn.Module, forget: ForgetSet, trained: list[nn.Parameter], cfg: UnlearnConfig,
                      report: UnlearnReport, control: RunControl | None = None) -> UnlearnReport:
    """Cross-entropy descent on the forget set with each label replaced by a fixed random wrong one."""
    offsets: list[torch.Tensor] = []  # drawn at the first batch, once the number of classes is known

    def step(out, batch):
        logits, y = out.logits, out.labels
        num_classes = logits.shape[1]
        if num_classes < 2:
            raise ValueError("random wrong labels need at least 2 classes")
        if not offsets:
            if forget.size is None:
                raise ValueError("method 'rl' needs the forget set's size before its first epoch: give a map-style "
                                 "dataset rather than a stream")
            generator = torch.Generator().manual_seed(cfg.seed)
            offsets.append(torch.randint(1, num_classes, (len(forget),), generator=generator).to(y.device))
        wrong = random_wrong_labels(y, offsets[0][batch.positions.to(y.device)], num_classes)
        return F.cross_entropy(logits, wrong), out.losses.detach()

    return run_descent(model, forget, trained, cfg, report, step, control=control)
