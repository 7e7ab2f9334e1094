"""Per-layer capture of inputs and output gradients, and the per-sample gradient terms they define."""

from .capture import LayerCapture
from .registry import find_rule, register, register_if, supported_types
from .selection import Target, check_samples_independent, select_targets
from .terms import EmbeddingTerm, OuterTerm, VectorTerm

__all__ = [
    "EmbeddingTerm",
    "LayerCapture",
    "OuterTerm",
    "Target",
    "VectorTerm",
    "check_samples_independent",
    "find_rule",
    "register",
    "register_if",
    "select_targets",
    "supported_types",
]
