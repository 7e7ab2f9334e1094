"""The sums a sketch-space influence needs, accumulated over sketch rows batch by batch.

Per Fisher block (a parameter's columns, or every column): the row sum sum_i g^_i and the second
moment sum_i g^_i g^_i^T (``full``, k_b x k_b) or its diagonal (``diagonal``); ``identity`` needs
only the sum. Each batch's products are formed in the rows' dtype and added into float64 sums.
The state is a dict of tensors (``state_dict``), so a pass can be saved, resumed or reduced.
"""

from __future__ import annotations

import torch

from .layout import SketchLayout


class SketchMoments:
    def __init__(self, layout: SketchLayout, fisher: str, blocks: str):
        self.spans = layout.fisher_blocks(blocks)
        self.fisher = fisher
        self.dim = layout.dim
        self.n = 0
        self.total = torch.zeros(layout.dim, dtype=torch.float64)
        self.second: dict[str, torch.Tensor] = {}

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach()
        if rows.shape[1] != self.dim:
            raise ValueError(f"sketch rows have {rows.shape[1]} columns, the layout {self.dim}")
        x = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
        self.total += x.sum(0).double().cpu()
        for label, start, stop in self.spans:
            if self.fisher == "identity":
                continue
            blk = x[:, start:stop]
            part = (blk.T @ blk) if self.fisher == "full" else (blk * blk).sum(0)
            part = part.double().cpu()
            if label in self.second:
                self.second[label] += part
            else:
                self.second[label] = part
        self.n += rows.shape[0]

    def state_dict(self) -> dict:
        return {"n": self.n, "total": self.total, "second": dict(self.second)}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        self.total = state["total"].double()
        self.second = {k: v.double() for k, v in state["second"].items()}
