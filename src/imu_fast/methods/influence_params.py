"""The influence parameters theta_c of an unlearning run: a classifier head, or chosen layers.

IMU scores samples through theta_c, penalises ||theta_c||_1 and, by default, updates only theta_c.
The head path is exact in closed form from one forward pass; the target path uses the per-layer
capture with the user's per-sample ``loss_fn`` (e.g. language models' sequence losses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..capture import Selection, select_targets
from ..config import UnlearnConfig
from ..forget_set import ForgetBatch, ForgetSet
from ..influence import batch_head_influence, batch_layer_influence, batch_sketch_influence, influence_scores
from ..model_io import module_name


@dataclass
class InfluenceParams:
    head: nn.Linear | None = None
    targets: list | None = None  # parameter names, parameters or modules of supported layers
    loss_fn: Callable | None = None  # per-sample losses for the target path (None: classification)
    sketch: object = None  # an imu_fast.SketchConfig: influence in sketch space (e.g. a full sketch Fisher)
    _selection: Selection | None = field(default=None, repr=False)
    _verified: bool = field(default=False, repr=False)

    def selection(self, model: nn.Module) -> Selection:
        if self._selection is None:
            self._selection = select_targets(model, self.targets if self.targets is not None else [self.head])
        return self._selection

    def names(self, model: nn.Module) -> list[str]:
        """The influence parameters' names (a checkpoint's key)."""
        if self.targets is None:
            return [f"{module_name(model, self.head)}.{name}" for name, _ in self.head.named_parameters()]
        return self.selection(model).names()

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.targets is None:
            return list(self.head.parameters())
        return self.selection(model).parameters()

    def scores(self, model: nn.Module, forget: ForgetSet, cfg: UnlearnConfig) -> torch.Tensor:
        common = dict(damping=cfg.damping, batch_size=cfg.batch_size, backend=cfg.backend, progress=cfg.progress)
        if self.sketch is not None:
            common["sketch"] = self.sketch
        if self.targets is None:
            return influence_scores(model, forget, head=self.head, **common).scores
        return influence_scores(model, forget, targets=self.targets, loss_fn=self.loss_fn, **common).scores

    def batch_scores(self, model: nn.Module, batch: ForgetBatch, cfg: UnlearnConfig,
                     across_processes: bool = False) -> torch.Tensor:
        """Scores of one batch from that batch alone, in eval mode (the caller restores the mode);
        ``across_processes``: ``batch`` is this process's share, the whole batch's scores return."""
        model.eval()
        if self.sketch is not None:
            if across_processes:
                raise ValueError("sketch= with refresh='batch' inside a process group is not supported yet; "
                                 "use refresh='once' or 'epoch', or run in one process")
            verify, self._verified = not self._verified and batch.size > 0, self._verified or batch.size > 0
            return batch_sketch_influence(model, self.selection(model), batch, self.loss_fn, sketch=self.sketch,
                                          damping=cfg.damping, backend=cfg.backend, verify=verify)
        if self.targets is None:
            return batch_head_influence(model, self.head, batch, damping=cfg.damping, backend=cfg.backend,
                                        across_processes=across_processes)
        verify, self._verified = not self._verified and batch.size > 0, self._verified or batch.size > 0
        return batch_layer_influence(model, self.selection(model), batch, self.loss_fn, damping=cfg.damping,
                                     backend=cfg.backend, verify=verify, across_processes=across_processes)
