"""Influence in sketch space: I_i = -g^_i^T (F^ + damping I)^-1 mean(g^) (IMU_SPEC.md section 4).

F^ = mean g^ g^^T per Fisher block (``full``: a Cholesky solve of each k_b x k_b block in
float64), its diagonal (``diagonal``: the paper's recipe on the sketches), or the identity
(``identity``: plain similarity to the mean sketch). Every score is then one dot product with
the solved vector v, so scoring streams over the rows (from memory or disk) in bounded memory.
``sketch_influence_ref`` is the dense float64 reference.
"""

from __future__ import annotations

import time

import torch

from .. import checks
from ..sketch.moments import SketchMoments
from ..sketch.sketch_set import SketchSet
from .result import InfluenceResult

FISHERS = ("full", "diagonal", "identity")


def solve(moments: SketchMoments, damping: float) -> tuple[torch.Tensor, dict, dict]:
    """``(v, F, mean)``: v (K,) float64 with I_i = -g^_i . v; F and mean per Fisher block."""
    if moments.n == 0:
        raise ValueError("no sketch rows to solve over")
    mean = moments.total / moments.n
    v = torch.zeros_like(mean)
    fisher, means = {}, {}
    for label, start, stop in moments.spans:
        m = mean[start:stop]
        means[label] = m.clone()
        if moments.fisher == "identity":
            v[start:stop] = m
            continue
        f = moments.second[label] / moments.n
        if moments.fisher == "diagonal":
            f = f + damping
            if (f <= 0).any() or not torch.isfinite(f).all():
                raise FloatingPointError(f"the sketch Fisher diagonal of {label!r} is not finite and positive; use "
                                         "damping > 0")
            v[start:stop] = m / f
        else:
            f = f + damping * torch.eye(stop - start, dtype=f.dtype)
            chol, info = torch.linalg.cholesky_ex(f)
            if int(info) != 0 or not torch.isfinite(f).all():
                raise FloatingPointError(f"the sketch Fisher of {label!r} ({stop - start} x {stop - start}) is not "
                                         "positive definite: use damping > 0 (it is singular when a block has more "
                                         "columns than samples)")
            v[start:stop] = torch.cholesky_solve(m[:, None], chol)[:, 0]
        fisher[label] = f
    return v, fisher, means


def scores_of(rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """-rows . v, computed in float64, returned in the rows' dtype (at least float32)."""
    out_dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
    return (-(rows.double() @ v.to(rows.device))).to(out_dtype).cpu()


def sketch_influence_ref(sketches: torch.Tensor, spans: list[tuple[str, int, int]], *, fisher: str,
                         damping: float) -> torch.Tensor:
    """Dense float64 reference: per block F = S_b^T S_b / N (+ damping I), v_b = F^-1 mean(S_b)."""
    s = sketches.double()
    n = s.shape[0]
    v = torch.zeros(s.shape[1], dtype=torch.float64)
    for _, start, stop in spans:
        blk = s[:, start:stop]
        mean = blk.mean(0)
        if fisher == "identity":
            v[start:stop] = mean
        elif fisher == "diagonal":
            v[start:stop] = mean / ((blk * blk).mean(0) + damping)
        else:
            f = blk.T @ blk / n + damping * torch.eye(stop - start, dtype=torch.float64)
            v[start:stop] = torch.linalg.solve(f, mean)
    return -(s @ v)


def sketch_influence(sketches: SketchSet, *, fisher: str | None = None, blocks: str | None = None,
                     damping: float = 0.01, chunk_rows: int = 65536) -> InfluenceResult:
    """Influence scores from saved (or in-memory) sketches, streamed in chunks of ``chunk_rows``:
    one pass for the moments, one for the scores. ``fisher`` and ``blocks`` default to the
    sketches' configuration."""
    if not isinstance(sketches, SketchSet):
        raise TypeError(f"sketch_influence takes a SketchSet (from gradient_sketches), got {type(sketches).__name__}")
    fisher = sketches.config.fisher if fisher is None else fisher
    blocks = sketches.config.blocks if blocks is None else blocks
    checks.choice("fisher", fisher, FISHERS)
    checks.choice("blocks", blocks, ("layer", "all"))
    checks.real("damping", damping, low=0)
    checks.integer("chunk_rows", chunk_rows, low=1)
    if sketches.layout.shared and blocks == "layer":
        blocks = "all"
    started = time.perf_counter()
    moments = SketchMoments(sketches.layout, fisher, blocks)
    for rows in sketches.chunks(chunk_rows):
        moments.update(rows)
    v, f, means = solve(moments, float(damping))
    scores = torch.cat([scores_of(rows, v) for rows in sketches.chunks(chunk_rows)])
    names = ", ".join(b.name for b in sketches.layout.blocks)
    return InfluenceResult(scores=scores, indices=sketches.indices.clone(), fisher=f, mean_grad=means, head=names,
                           backend=str(sketches.metadata.get("backend", "")), damping=float(damping),
                           seconds=time.perf_counter() - started)
