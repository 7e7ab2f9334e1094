"""Settings of a gradient sketch: what is projected how, and which Fisher its influence uses.

``kind="kronecker"`` (LoGra-style): every linear-family weight (Linear with token axes, GPT-2
Conv1D, Conv2d through unfold, attention projections, LM heads) gets its own block of
``dim = k_in * k_out`` columns, P_out^T g_i P_in; every other parameter (biases, norms,
embeddings) gets ``other_dim`` columns of on-the-fly JL. ``kind="jl"``: one dense JL projection
of every selected parameter into ``dim`` columns in all. A parameter (or one side of a layer) no
wider than its sketch is kept exactly instead of projected.

``fisher``: ``full`` I_i = -g^_i^T (F^ + lambda I)^-1 mean(g^) with F^ = mean g^ g^^T, per block
(``blocks="layer"``, the default for kronecker) or over every column (``"all"``, the only choice
for jl); ``diagonal`` the paper's recipe in sketch space; ``identity`` plain gradient similarity.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from .. import checks
from ..ops._launch import PRECISIONS

KINDS = ("kronecker", "jl")
FISHERS = ("full", "diagonal", "identity")
BLOCKS = ("layer", "all")
DTYPES = ("float32", "float64")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SketchConfig:
    kind: str = "kronecker"
    dim: int = 256  # kronecker: columns per layer (k_in * k_out); jl: columns in all
    fisher: str = "full"
    seed: int = 0
    blocks: str | None = None  # None: "layer" for kronecker, "all" for jl
    factors: tuple[int, int] | None = None  # kronecker (k_in, k_out); None: both sqrt(dim)
    other_dim: int = 64  # kronecker: JL columns of each parameter that is not a linear-family weight
    dtype: str = "float32"  # of the stored sketches
    # How float32 rows meet the JL kernels' tensor cores (Triton) or AMX tiles (C++): tf32x3 keeps
    # float32's accuracy; tf32 and bf16 trade it for speed (bf16: ~2e-3 relative, well under the
    # projection's own ~1/sqrt(k) distortion); ieee is plain float32 arithmetic.
    precision: str = "tf32x3"

    def __post_init__(self):
        where = "SketchConfig"
        checks.choice("kind", self.kind, KINDS, where=where)
        checks.integer("dim", self.dim, low=1, where=where)
        checks.choice("fisher", self.fisher, FISHERS, where=where)
        checks.integer("seed", self.seed, low=0, where=where)
        if self.seed > MAX_SEED:
            raise ValueError(f"{where}: seed must be at most 2^63 - 1, got {self.seed}")
        checks.integer("other_dim", self.other_dim, low=1, where=where)
        checks.choice("dtype", self.dtype, DTYPES, where=where)
        checks.choice("precision", self.precision, PRECISIONS, where=where)
        blocks = self.blocks if self.blocks is not None else ("layer" if self.kind == "kronecker" else "all")
        checks.choice("blocks", blocks, BLOCKS, where=where)
        if self.kind == "jl" and blocks != "all":
            raise ValueError(f"{where}: kind='jl' projects every parameter into the same {self.dim} columns, so its "
                             "Fisher is over all of them: blocks must be 'all' (or None)")
        object.__setattr__(self, "blocks", blocks)
        if self.factors is not None:
            if self.kind != "kronecker":
                raise ValueError(f"{where}: factors=(k_in, k_out) applies to kind='kronecker' only")
            if not isinstance(self.factors, (tuple, list)) or len(self.factors) != 2:
                raise TypeError(f"{where}: factors must be a pair (k_in, k_out), got {self.factors!r}")
            k_in, k_out = (checks.integer(f"factors[{i}]", v, low=1, where=where) for i, v in enumerate(self.factors))
            if k_in * k_out != self.dim:
                raise ValueError(f"{where}: factors {k_in} x {k_out} = {k_in * k_out} do not multiply to dim={self.dim}")
            object.__setattr__(self, "factors", (k_in, k_out))
        elif self.kind == "kronecker":
            root = math.isqrt(self.dim)
            if root * root != self.dim:
                raise ValueError(f"{where}: dim={self.dim} is not a square, so it has no default k_in = k_out; give "
                                 "factors=(k_in, k_out) with k_in * k_out = dim")

    @property
    def k_in(self) -> int:
        return self.factors[0] if self.factors is not None else math.isqrt(self.dim)

    @property
    def k_out(self) -> int:
        return self.factors[1] if self.factors is not None else math.isqrt(self.dim)

    def replace(self, **changes) -> "SketchConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown sketch settings: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["factors"] = None if self.factors is None else list(self.factors)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "SketchConfig":
        if not isinstance(data, dict):
            raise TypeError(f"a sketch configuration must be a dict, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown sketch settings: {sorted(unknown)}")
        data = dict(data)
        if isinstance(data.get("factors"), list):
            data["factors"] = tuple(data["factors"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "SketchConfig":
        return cls.from_dict(json.loads(text))

    def solve_settings(self) -> dict:
        """The settings that only change how sketches are scored, not the sketches themselves."""
        return {"fisher": self.fisher, "blocks": self.blocks}

    def sketch_settings(self) -> dict:
        """The settings that determine the sketches (what a saved set must match to be reused)."""
        out = self.to_dict()
        for key in self.solve_settings():
            out.pop(key)
        return out
