"""Per-sample statistics ops. Each op has a pure-PyTorch ``<op>_ref`` and a dispatching ``<op>``."""

from .head_influence import head_influence, head_influence_ref
from .head_moments import head_moments, head_moments_ref

__all__ = ["head_influence", "head_influence_ref", "head_moments", "head_moments_ref"]
