"""From the terms one capture pass emits to the batch's sketch rows (n x K).

``SketchBuilder.on_term`` is the capture callback: each parameter's term is sketched as soon as
it arrives (so the layer's inputs and output gradients can be freed before the next layer's
arrive), by the kind its layout block says. On the first batch of a new sketch, the kinds are
read off the terms and the layout is fixed when the batch is complete (``finish``).
"""

from __future__ import annotations

import math

import torch

from ..ops._launch import result_dtype
from .config import SketchConfig
from .layout import Projector, SketchBlock, SketchLayout, block_kind, kron_factors

STORAGE = {"float32": torch.float32, "float64": torch.float64}


class SketchBuilder:
    def __init__(self, config: SketchConfig, shapes: dict[str, tuple], backend: str, device: torch.device,
                 layout: SketchLayout | None = None, dtype: torch.dtype = torch.float32):
        self.config = config
        self.device = device
        self.dtype = dtype  # of the factors: the terms' compute dtype, so no op casts them per call
        self.shapes = shapes
        self.backend = backend
        self.layout = layout
        self.kinds: dict[str, tuple[str, int, int]] = {}
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pieces: dict[str, torch.Tensor] = {}
        total = sum(math.prod(s) for s in shapes.values())
        self._jl_exact = config.kind == "jl" and total <= config.dim

    def _kind(self, name: str, term) -> tuple[str, int, int]:
        if self.layout is not None:
            block = self.layout.by_name[name]
            return block.kind, block.k_in, block.k_out
        if name not in self.kinds:
            kind = ("exact", 0, 0) if self._jl_exact else block_kind(self.config, self.shapes[name], term)
            self.kinds[name] = kind
        return self.kinds[name]

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_in, P_out) of a Kronecker parameter on the model's device, in the terms' compute dtype."""
        if name not in self._factors:
            if self.layout is not None:
                block = self.layout.by_name[name]
            else:
                kind, k_in, k_out = self.kinds[name]
                block = SketchBlock(name, kind, 0, k_in * k_out, tuple(self.shapes[name]), k_in, k_out)
            self._factors[name] = kron_factors(self.config.seed, block, dtype=self.dtype, device=self.device)
        return self._factors[name]

    def on_term(self, name: str, term) -> None:
        kind, _, _ = self._kind(name, term)
        n = term.n
        if kind == "kronecker":
            if not hasattr(term, "kron_sketch"):
                raise TypeError(f"parameter {name!r} was Kronecker-sketched on an earlier batch but its per-sample "
                                f"gradient now comes as a {type(term).__name__}, which has no Kronecker form")
            p_in, p_out = self.factors(name)
            piece = term.kron_sketch(p_in, p_out, self.backend).reshape(n, -1)
        elif kind == "jl":
            k = self.config.dim if self.config.kind == "jl" else self.config.other_dim
            piece = term.jl_sketch(Projector(self.config.seed, name, k, self.backend, self.config.precision))
        else:
            piece = term.dense(slice(None))
            piece = piece.to(result_dtype(piece.dtype))
        self._pieces[name] = piece.detach()

    def finish(self) -> torch.Tensor:
        """The batch's rows (n x K) in the stored dtype; fixes the layout after a first batch."""
        missing = [name for name in self.shapes if name not in self._pieces]
        if missing:
            raise RuntimeError(f"the capture pass gave no per-sample gradient for parameters {missing}")
        if self.layout is None:
            self.layout = SketchLayout.build(self.config, self.kinds if not self._jl_exact else
                                             {k: ("exact", 0, 0) for k in self.shapes}, self.shapes)
        storage = STORAGE[self.config.dtype]
        if self.layout.shared:
            rows = sum(self._pieces[b.name].to(torch.float64 if storage == torch.float64 else
                                               self._pieces[b.name].dtype) for b in self.layout.blocks).to(storage)
        else:
            rows = torch.cat([self._pieces[b.name].to(storage) for b in self.layout.blocks], dim=1)
        self._pieces = {}
        return rows
