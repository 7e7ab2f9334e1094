"""What a first pass over the forget set keeps for the second, within a memory budget.

Influence needs two passes (the scores need M, which needs every sample). Each batch's item
(head residuals and inputs, or per-layer terms) is kept while the total stays within ``budget``
bytes; the second pass reuses those and recomputes the rest from a second read of the data, so
memory is bounded whatever the forget set's size.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..forget_set import ForgetBatch, ForgetSet


class BudgetCache:
    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.items: list = []

    def has_room(self) -> bool:
        """Whether an item for the next batch could still be kept (so is worth building)."""
        return self.used < self.budget

    def offer(self, item, nbytes: int) -> None:
        if item is not None and self.used + nbytes <= self.budget:
            self.items.append(item)
            self.used += nbytes
        else:
            self.items.append(None)

    def replay(self, forget: ForgetSet, recompute: Callable[[ForgetBatch], object]) -> Iterator:
        """Every batch's item in the first pass's order: kept ones as they are, others recomputed."""
        missing = {k for k, item in enumerate(self.items) if item is None}
        fresh = forget.batches(wanted=missing) if missing else iter(())
        for k, item in enumerate(self.items):
            if item is None:
                batch = next(fresh, None)
                if batch is None or batch.number != k:
                    raise RuntimeError(f"the {forget.what} set yielded fewer batches on its second pass than on its first")
                item = recompute(batch)
            yield item
        if next(fresh, None) is not None:
            raise RuntimeError(f"the {forget.what} set yielded more batches on its second pass than on its first")
