"""Low-rank sketches of per-sample gradients: Kronecker-factored blocks for linear-family layers,
on-the-fly JL projections for everything else (or for everything), in memory or in shards on disk.

``SketchConfig`` says what is projected how; ``gradient_sketches`` computes a ``SketchSet``;
``imu_fast.influence_scores(..., sketch=...)`` and ``imu_fast.sketch_influence`` score with them.
"""

from .api import gradient_sketches
from .config import SketchConfig
from .layout import SketchBlock, SketchLayout
from .sketch_set import SketchSet

__all__ = ["SketchBlock", "SketchConfig", "SketchLayout", "SketchSet", "gradient_sketches"]
