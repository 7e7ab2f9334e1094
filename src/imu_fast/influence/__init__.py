"""Influence scores: the result type, the damped solve, the memory-budget cache, and the two
routes (closed-form classifier head; per-layer targets) behind ``influence_scores``."""

from .api import DEFAULT_MEMORY_BUDGET, influence_scores
from .head_route import batch_head_influence, compute_dtype
from .layer_route import batch_layer_influence
from .reference import influence_scores_ref
from .result import InfluenceResult
from .sketch_route import batch_sketch_influence
from .sketch_solve import sketch_influence, sketch_influence_ref

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "InfluenceResult",
    "batch_head_influence",
    "batch_layer_influence",
    "batch_sketch_influence",
    "compute_dtype",
    "influence_scores",
    "influence_scores_ref",
    "sketch_influence",
    "sketch_influence_ref",
]
