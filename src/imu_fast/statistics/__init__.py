"""Per-sample gradient statistics over a data set, and the sums every pass accumulates."""

from .api import fisher_diagonal, per_sample_grad_norms
from .sums import TermSums

__all__ = ["TermSums", "fisher_diagonal", "per_sample_grad_norms"]
