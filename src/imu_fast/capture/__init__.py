"""Per-layer capture: which layers use the selected parameters, the per-sample gradient terms of
each (one rule per layer type), and the engine that records them in one forward/backward."""

from .engine import CaptureSession, capture_terms
from .registry import find_rule, register, register_if, supported_types
from .selection import Selection, Target, check_samples_independent, select_targets
from .terms import EmbeddingTerm, OuterTerm, VectorTerm

__all__ = [
    "CaptureSession",
    "EmbeddingTerm",
    "OuterTerm",
    "Selection",
    "Target",
    "VectorTerm",
    "capture_terms",
    "check_samples_independent",
    "find_rule",
    "register",
    "register_if",
    "select_targets",
    "supported_types",
]
