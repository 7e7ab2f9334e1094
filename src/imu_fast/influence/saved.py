"""An ``InfluenceResult`` as a saved stage (``influence_scores(..., stage=directory)``).

The settings that change the scores are compared on reload: the route, the requested head (or
``"auto"``) or the target parameters, the loss function's qualified name, the damping and the
accumulation dtype. The backend is recorded but not compared (backends agree to rounding).
"""

from __future__ import annotations

import torch

from ..stages import Stage, function_name
from .result import InfluenceResult

KIND = "influence"


def influence_settings(*, head_name: str | None, targets: list[str] | None, loss_fn, damping: float,
                       dtype: torch.dtype | None) -> dict:
    return {"route": "head" if targets is None else "layers", "head": (head_name or "auto") if targets is None else None,
            "targets": targets, "loss_fn": function_name(loss_fn), "damping": float(damping), "dtype": None if dtype is None else str(dtype)}


def result_tensors(result: InfluenceResult) -> dict[str, torch.Tensor]:
    tensors = {"scores": result.scores, "indices": result.indices}
    for part in ("fisher", "mean_grad"):
        value = getattr(result, part)
        if isinstance(value, dict):
            tensors.update({f"{part}/{name}": t for name, t in value.items()})
        else:
            tensors[part] = value
    return tensors


def result_info(result: InfluenceResult) -> dict:
    return {"head": result.head, "backend": result.backend, "seconds": result.seconds}


def result_from_stage(stage: Stage, damping: float) -> InfluenceResult:
    t = stage.tensors
    parts = {}
    for part in ("fisher", "mean_grad"):
        parts[part] = t[part] if part in t else {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith(part + "/")}
    return InfluenceResult(scores=t["scores"], indices=t["indices"], fisher=parts["fisher"],
                           mean_grad=parts["mean_grad"], head=stage.info.get("head", ""),
                           backend=stage.info.get("backend", ""), damping=damping, seconds=0.0)
