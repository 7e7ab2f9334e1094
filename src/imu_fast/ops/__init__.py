"""Per-sample statistics ops. Each op has a pure-PyTorch ``<op>_ref`` and a dispatching ``<op>``.

The kernel ops are ``torch.library`` custom ops in the ``imu_fast`` namespace
(``torch.ops.imu_fast.outer_fisher`` etc.), registered when this package is imported, each with a
fake implementation so that ``torch.compile(fullgraph=True)`` traces through them."""

from .head_influence import head_influence, head_influence_ref
from .head_moments import head_moments, head_moments_ref
from .outer_dot import outer_dot, outer_dot_ref
from .outer_fisher import outer_fisher, outer_fisher_and_norms_sq, outer_fisher_ref
from .outer_norms import outer_norms_sq, outer_norms_sq_ref
from .sketch_jl import jl_project, jl_project_ref
from .sketch_kron import kron_sketch, kron_sketch_ref

__all__ = [
    "head_influence",
    "head_influence_ref",
    "head_moments",
    "head_moments_ref",
    "jl_project",
    "jl_project_ref",
    "kron_sketch",
    "kron_sketch_ref",
    "outer_dot",
    "outer_dot_ref",
    "outer_fisher",
    "outer_fisher_and_norms_sq",
    "outer_fisher_ref",
    "outer_norms_sq",
    "outer_norms_sq_ref",
]
