"""Settings the trainer adapters add to their host's own (optimiser, schedule, epochs stay the host's).

``IMUSettings`` defaults to the authors' language-model recipe (IMU_SPEC section 3): influence
recomputed from every batch alone (``refresh="batch"``), L1 weight ``alpha=0.02``, and only the
influence parameters theta_c trained (``scope="head"``, as in ``imu_fast.unlearn``). The vision
recipe is ``refresh="once", alpha=0.2`` (``top_fraction=0.1`` then applies).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .. import checks
from ..config import BACKEND_NAMES, REFRESH_MODES, SCOPES, WEIGHTINGS
from ..stop import StopCriteria  # noqa: F401  (the one stop-criteria type, shared with unlearn(stop=...))

WHERE = "IMU settings"


@dataclass(frozen=True)
class IMUSettings:
    weighting: str = "influence"  # influence | uniform (uniform with scope="all", alpha=0 is plain GA)
    refresh: str = "batch"  # once | epoch | batch (influence weighting only)
    alpha: float = 0.02  # L1 penalty on theta_c
    damping: float = 0.01
    top_fraction: float = 0.1  # share of negative-influence samples kept (refresh once | epoch)
    clip_quantile: float = 0.93
    scope: str = "head"  # head: train theta_c only; all: whatever the Trainer trains
    backend: str = "auto"
    influence_batch_size: int | None = None  # batches of the whole-forget-set passes (None: the train batch size)

    def __post_init__(self):
        checks.choice("weighting", self.weighting, WEIGHTINGS, where=WHERE)
        checks.choice("refresh", self.refresh, REFRESH_MODES, where=WHERE)
        checks.choice("scope", self.scope, SCOPES, where=WHERE)
        checks.choice("backend", self.backend, BACKEND_NAMES, where=WHERE)
        checks.real("alpha", self.alpha, low=0, where=WHERE)
        checks.real("damping", self.damping, low=0, where=WHERE)
        checks.real("top_fraction", self.top_fraction, low=0, high=1, low_open=True, where=WHERE)
        checks.real("clip_quantile", self.clip_quantile, low=0, high=1, where=WHERE)
        if self.influence_batch_size is not None:
            checks.integer("influence_batch_size", self.influence_batch_size, low=1, where=WHERE)
        if self.weighting == "influence" and self.refresh == "batch" and self.top_fraction != 0.1:
            raise ValueError(f"{WHERE}: top_fraction applies to refresh 'once' or 'epoch'; the per-batch variant "
                             "keeps every negative-influence sample of a batch")

    @property
    def needs_theta(self) -> bool:
        """Whether the run needs influence parameters (to score, to penalise, or to train)."""
        return self.weighting == "influence" or self.alpha > 0 or self.scope == "head"

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "IMUSettings":
        """Pops the settings' fields out of ``kwargs`` (the rest goes to the host's constructor)."""
        return cls(**{f.name: kwargs.pop(f.name) for f in fields(cls) if f.name in kwargs})
