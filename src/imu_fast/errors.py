"""Exceptions that carry which samples are at fault.

Code that sees only one batch (a loss function, a validation step) names samples by their
position in that batch; the forget-set pipeline knows the batch's dataset indices and turns the
positions into indices before the user sees the error.
"""

from __future__ import annotations


class BatchPositionsError(ValueError):
    """Samples at ``positions`` of the current batch are invalid; ``reason`` says why."""

    def __init__(self, reason: str, positions):
        self.reason = reason
        self.positions = [int(p) for p in positions]
        shown = self.positions[:10]
        more = " ..." if len(self.positions) > 10 else ""
        super().__init__(f"{reason} at batch positions {shown}{more}")
