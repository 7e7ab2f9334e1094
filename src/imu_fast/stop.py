"""When an unlearning run may stop early, judged on the forget set alone (no retain data)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import checks


@dataclass(frozen=True)
class StopCriteria:
    """Stop criteria of ``unlearn(..., stop=...)``; the run ends at the first check where any holds.

    The forget set (all of it, in eval mode) is evaluated before the first step and after every
    ``check_every`` optimiser steps; the step budget is checked after every step. The accuracy
    target needs classification data; the loss is the mean per-sample forget loss (cross-entropy,
    or the run's ``loss_fn``). The run also ends after its configured epochs, whichever comes first.
    """

    forget_accuracy_at_most: float | None = None  # fraction of forget samples classified correctly, in [0, 1]
    forget_loss_at_least: float | None = None  # mean per-sample forget loss
    max_steps: int | None = None  # optimiser steps over the whole run
    check_every: int = 1  # optimiser steps between evaluations of the forget set

    def __post_init__(self):
        where = "StopCriteria"
        if self.forget_accuracy_at_most is not None:
            checks.real("forget_accuracy_at_most", self.forget_accuracy_at_most, low=0, high=1, where=where)
        if self.forget_loss_at_least is not None:
            checks.real("forget_loss_at_least", self.forget_loss_at_least, where=where)
        if self.max_steps is not None:
            checks.integer("max_steps", self.max_steps, low=0, where=where)
        checks.integer("check_every", self.check_every, low=1, where=where)
        if self.forget_accuracy_at_most is None and self.forget_loss_at_least is None and self.max_steps is None:
            raise ValueError(f"{where}: give at least one of forget_accuracy_at_most, forget_loss_at_least, max_steps")

    @property
    def reads_forget_set(self) -> bool:
        return self.forget_accuracy_at_most is not None or self.forget_loss_at_least is not None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def met(self, steps: int, accuracy: float | None, loss: float | None) -> str:
        """Why the run stops now (empty if it does not)."""
        if self.forget_accuracy_at_most is not None and accuracy is not None and accuracy <= self.forget_accuracy_at_most:
            return f"forget accuracy {accuracy:.4f} <= {self.forget_accuracy_at_most} after {steps} steps"
        if self.forget_loss_at_least is not None and loss is not None and loss >= self.forget_loss_at_least:
            return f"forget loss {loss:.4f} >= {self.forget_loss_at_least} after {steps} steps"
        if self.max_steps is not None and steps >= self.max_steps:
            return f"step budget of {self.max_steps} steps reached"
        return ""
