"""Sums over samples of per-parameter gradient terms: the statistics every pass accumulates.

``TermSums`` consumes the terms a capture pass emits, batch by batch, and keeps for each
parameter the Fisher numerator sum_i g_i^2 and/or the gradient sum sum_i g_i, plus the sample
count. Its state is a plain dict of tensors, so a pass can be saved, resumed or reduced across
processes by whoever owns it.
"""

from __future__ import annotations

import torch

from .. import distributed


class TermSums:
    def __init__(self, backend: str = "auto", *, fisher: bool = True, grad: bool = True):
        self.backend = backend
        self.fisher: dict[str, torch.Tensor] | None = {} if fisher else None
        self.grad: dict[str, torch.Tensor] | None = {} if grad else None
        self.n = 0

    @staticmethod
    def _add(into: dict, name: str, value: torch.Tensor) -> None:
        if name not in into:
            into[name] = value
        else:
            into[name].add_(value)  # in place: a vocabulary-sized sum is not copied per batch

    def update(self, name: str, term) -> None:
        """Adds one batch's term of parameter ``name``."""
        if self.fisher is not None:
            self._add(self.fisher, name, term.fisher_sum(self.backend))
        if self.grad is not None:
            self._add(self.grad, name, term.grad_sum())

    def add_samples(self, count: int) -> None:
        self.n += count

    def all_reduce(self, device: torch.device | None = None) -> None:
        """Sums the counts and every sum over the processes of a group (in place); a process that
        saw no sample contributes zeros (on ``device``, the model's)."""
        self.n = distributed.reduce_count(self.n)
        if self.fisher is not None:
            self.fisher = distributed.reduce_sums(self.fisher, device)
        if self.grad is not None:
            self.grad = distributed.reduce_sums(self.grad, device)

    def state_dict(self) -> dict:
        return {"n": self.n, "fisher": dict(self.fisher or {}), "grad": dict(self.grad or {})}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        if self.fisher is not None:
            self.fisher = dict(state["fisher"])
        if self.grad is not None:
            self.grad = dict(state["grad"])
