"""The influence parameters theta_c of an unlearning run: a classifier head, or chosen layers.

IMU scores samples through theta_c, penalises ||theta_c||_1 and, by default, updates only theta_c.
The head path is exact in closed form from one forward pass; the target path uses the per-layer
capture with the user's per-sample ``loss_fn`` (e.g. language models' sequence losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import UnlearnConfig
from ..forget_data import split_batch
from ..influence import batch_influence, compute_dtype, influence_scores
from ..influence_layers import batch_layer_influence


@dataclass
class InfluenceParams:
    head: nn.Linear | None = None
    targets: list | None = None  # parameter names, parameters or modules of supported layers
    loss_fn: Callable | None = None  # per-sample losses for the target path (None: classification)

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.targets is None:
            return list(self.head.parameters())
        from ..capture import select_targets

        named = dict(model.named_parameters())
        return [named[name] for target in select_targets(model, self.targets) for name in target.params.values()]

    def scores(self, model: nn.Module, dataset, cfg: UnlearnConfig) -> torch.Tensor:
        common = dict(damping=cfg.damping, batch_size=cfg.batch_size, backend=cfg.backend, progress=cfg.progress)
        if self.targets is None:
            return influence_scores(model, dataset, head=self.head, **common).scores
        return influence_scores(model, dataset, targets=self.targets, loss_fn=self.loss_fn, **common).scores

    def batch_scores(self, model: nn.Module, batch, device: torch.device, cfg: UnlearnConfig) -> torch.Tensor:
        """Scores of one batch from that batch alone, in eval mode (the caller restores the mode)."""
        model.eval()
        if self.targets is None:
            x, y = split_batch(batch, model, device, 0)
            return batch_influence(model, self.head, x, y, damping=cfg.damping, backend=cfg.backend,
                                   dtype=compute_dtype(self.head, None))
        return batch_layer_influence(model, self.loss_fn, batch, self.targets, damping=cfg.damping,
                                     backend=cfg.backend)
