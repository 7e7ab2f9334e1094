"""Tests against open-unlearning itself, in its pinned environment (transformers 4.45.1,
accelerate 0.34.2, deepspeed 0.15.4, omegaconf, datasets 3.0.1): ``.ci/run`` builds that
environment and runs this folder there; the main suite never collects it.

open-unlearning's ``src`` comes from ``$OPEN_UNLEARNING_SRC``, or the snapshot in
``shared/third_party/open-unlearning`` beside the repository's folder (or at /work/shared, where
the workspace keeps it when the repository is cloned elsewhere). Nothing here skips: a missing
piece is an error.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SNAPSHOTS = [Path(__file__).resolve().parents[1].parent / "shared" / "third_party" / "open-unlearning",
             Path("/work/shared/third_party/open-unlearning")]
CANDIDATES = [Path(os.environ["OPEN_UNLEARNING_SRC"])] if "OPEN_UNLEARNING_SRC" in os.environ else \
    [snapshot / "src" for snapshot in SNAPSHOTS]
SRC = next((c for c in CANDIDATES if (c / "trainer" / "unlearn" / "base.py").is_file()), None)
if SRC is None:
    raise RuntimeError(f"open-unlearning's src not found at {[str(c) for c in CANDIDATES]}; set OPEN_UNLEARNING_SRC")
sys.path.insert(0, str(SRC))
CONFIGS = SRC.parent / "configs"

import torch  # noqa: E402

torch.set_num_threads(1)
