"""What ``gradient_sketches`` returns: N x K sketches with their indices, layout and metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..ops import jl_project
from ..ops.philox import ROLE_JL
from .config import SketchConfig
from .layout import SketchLayout, kron_factors, stream_of
from .store import INDICES, METADATA, ShardedSketches

FORMAT = "imu_fast.sketches"
VERSION = 1


class SketchSet:
    """Per-sample gradient sketches of a data set.

    ``sketches``  N x K: a tensor, or ``ShardedSketches`` (memory-mapped shards) for a set on disk
    ``indices``   (N,) dataset index of every row, ascending
    ``layout``    which columns belong to which parameter (``layout.blocks``: name, kind, start, stop)
    ``metadata``  seed, sizes, parameters, model fingerprint, configuration, ...
    """

    def __init__(self, sketches, indices: torch.Tensor, layout: SketchLayout, config: SketchConfig, metadata: dict,
                 folder: Path | None = None):
        self.sketches = sketches
        self.indices = indices
        self.layout = layout
        self.config = config
        self.metadata = metadata
        self.folder = folder

    @property
    def n(self) -> int:
        return int(self.indices.numel())

    @property
    def dim(self) -> int:
        return self.layout.dim

    def __repr__(self) -> str:
        where = f"on disk at {self.folder}" if self.folder is not None else "in memory"
        return f"SketchSet(n={self.n}, dim={self.dim}, kind={self.config.kind!r}, {where})"

    def chunks(self, rows: int = 65536) -> Iterator[torch.Tensor]:
        """The rows in order, in blocks of at most ``rows`` (read from disk block by block)."""
        if isinstance(self.sketches, ShardedSketches):
            yield from self.sketches.chunks(rows)
            return
        for start in range(0, self.n, rows):
            yield self.sketches[start:start + rows]

    def projection(self, name: str, *, dtype: torch.dtype = torch.float64, device=None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_in, P_out) of a Kronecker-sketched parameter: its block of columns is
        vec(P_out^T g P_in) for the gradient g viewed as (shape[0] x rest)."""
        block = self._block(name)
        if block.kind != "kronecker":
            raise ValueError(f"parameter {name!r} is {block.kind}-sketched, not Kronecker: it has no factors "
                             "(project a gradient with SketchSet.project instead)")
        p_in, p_out = kron_factors(self.config.seed, block, dtype=dtype, device=device)
        return p_in.clone(), p_out.clone()

    def _block(self, name: str):
        if name not in self.layout.by_name:
            raise KeyError(f"no parameter {name!r} in these sketches; they hold {list(self.layout.by_name)}")
        return self.layout.by_name[name]

    def project(self, grads: dict[str, torch.Tensor], *, backend: str = "auto") -> torch.Tensor:
        """Sketch explicit gradients the same way (queries, or checks): ``grads`` maps every
        parameter of the layout to a tensor of its shape, or of (M, *shape) for M gradients.
        Returns (K,) or (M, K) in float64 for float64 inputs, else float32."""
        missing = [name for name in self.layout.by_name if name not in grads]
        if missing:
            raise KeyError(f"project needs a gradient for every sketched parameter; missing {missing}")
        pieces = []
        single = None
        for block in self.layout.blocks:
            g = grads[block.name]
            shape = tuple(block.shape)
            if tuple(g.shape) == shape:
                batch, g = False, g[None]
            elif tuple(g.shape[1:]) == shape:
                batch = True
            else:
                raise ValueError(f"gradient of {block.name!r} has shape {tuple(g.shape)}; expected {shape} or "
                                 f"(M, *{shape})")
            if single is not None and single != (not batch):
                raise ValueError("give every gradient with the same leading M axis, or none with it")
            single = not batch
            flat = g.reshape(g.shape[0], -1)
            flat = flat.double() if flat.dtype == torch.float64 else flat.float()
            if block.kind == "kronecker":
                rows, cols = block.matrix
                p_in, p_out = kron_factors(self.config.seed, block, device=flat.device)
                mat = flat.reshape(-1, rows, cols)
                pieces.append((p_out.to(mat.dtype).T @ mat @ p_in.to(mat.dtype)).reshape(len(mat), -1))
            elif block.kind == "jl":
                pieces.append(jl_project(flat, col0=0, k=block.width, seed=self.config.seed,
                                         stream=stream_of(block.name), role=ROLE_JL, backend=backend,
                                         precision=self.config.precision))
            else:
                pieces.append(flat)
        out = sum(pieces) if self.layout.shared else torch.cat(pieces, dim=1)
        return out[0] if single else out

    @classmethod
    def load(cls, folder) -> "SketchSet":
        """A set written by ``gradient_sketches(..., out=folder)``; its shards are mapped, not read."""
        folder = Path(folder)
        path = folder / METADATA
        if not path.exists():
            raise FileNotFoundError(f"{folder} holds no sketches (no {METADATA})")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not an imu_fast sketch set (format {meta.get('format')!r})")
        if meta.get("version") != VERSION:
            raise ValueError(f"{path} has sketch format version {meta.get('version')}; this imu_fast reads {VERSION}")
        if not meta.get("complete"):
            raise RuntimeError(f"the sketches in {folder} are incomplete (the run was interrupted): run "
                               "gradient_sketches with the same out= again to finish them")
        layout = SketchLayout.from_list(meta["layout"], meta["dim"])
        sketches = ShardedSketches(folder, meta["n"], meta["dim"], meta["shard_rows"], meta["config"]["dtype"])
        indices = torch.from_numpy(np.load(folder / INDICES))
        return cls(sketches, indices, layout, SketchConfig.from_dict(meta["config"]), meta, folder)
